#!/usr/bin/env python3
"""Sanity checks for the converted models, run by prepare.sh with onnxruntime (independent of tract).

The astronaut portrait (NASA, public domain, shipped in scikit-image) must give one face in the right place with
both BlazeFace models, and face-api's expression net must read the smile on that face as happy.
"""
import sys

import numpy as np
import onnxruntime as ort
import skimage.data
from PIL import Image

D = sys.argv[1]
img = skimage.data.astronaut()
H, W = img.shape[:2]


def anchors(size, spec):
    out = []
    for stride, n in spec:
        g = size // stride
        out += [((x + 0.5) / g, (y + 0.5) / g) for y in range(g) for x in range(g) for _ in range(n)]
    return np.array(out, np.float32)


face = None
for name, size, spec in [("blazeface_short_range", 128, [(8, 2), (16, 6)]), ("blazeface_full_range", 192, [(4, 1)])]:
    s = size / max(H, W)
    im = Image.fromarray(img).resize((round(W * s), round(H * s)), Image.BILINEAR)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[: im.size[1], : im.size[0]] = np.asarray(im)
    x = (canvas.astype(np.float32) / 127.5 - 1.0)[None].transpose(0, 3, 1, 2).copy()
    reg, cls = ort.InferenceSession(f"{D}/{name}.onnx").run(None, {"input": x})
    a = anchors(size, spec)
    assert len(a) == reg.shape[1], (name, len(a), reg.shape)
    p = 1 / (1 + np.exp(-np.clip(cls[0, :, 0], -80, 80)))
    i = int(p.argmax())
    cx, cy = a[i, 0] + reg[0, i, 0] / size, a[i, 1] + reg[0, i, 1] / size
    bw, bh = reg[0, i, 2] / size, reg[0, i, 3] / size
    box = [(cx - bw / 2) / s * size, (cy - bh / 2) / s * size, (cx + bw / 2) / s * size, (cy + bh / 2) / s * size]
    print(f"{name}: score {p[i]:.3f} box {[round(float(v)) for v in box]}")
    assert p[i] > 0.8 and 150 < box[0] < 200 and 60 < box[1] < 100 and 250 < box[2] < 300, f"{name} misdetects"
    face = box

x0, y0, x1, y1 = face
side = max(x1 - x0, y1 - y0)
cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
crop = Image.fromarray(img).crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
x = np.asarray(crop.resize((112, 112), Image.BILINEAR), np.float32)[None]
probs = ort.InferenceSession(f"{D}/faceapi_expression.onnx").run(None, {"input": x})[0][0]
labels = "neutral,happy,sad,angry,fearful,disgusted,surprised".split(",")
print("faceapi_expression:", {l: round(float(v), 3) for l, v in zip(labels, probs)})
assert labels[int(probs.argmax())] == "happy", "expression net does not read the astronaut's smile"
print("models OK")
