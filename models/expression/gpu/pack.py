#!/usr/bin/env python3
"""Carry FER+ train+val to a borrowed GPU machine and back into the recipe's layout, losslessly and small.

    python pack.py pack   ../../../../shared/data/ferplus DIR   # DIR/resid.xz + DIR/labels.csv.xz (~48 MB, no test rows)
    python pack.py unpack DIR /tmp/fer                         # /tmp/fer/images.u8 + labels.csv for recipe.py --data

The 48x48 faces compress poorly as raw bytes (zstd -19: 82 -> 68 MB); the LOCO-I/JPEG-LS median predictor's
residuals compress to 48 MB with xz. Test rows are left out: training never reads them (selection is on val).
"""
import csv
import io
import lzma
import os
import sys

import numpy as np

SIZE = 48


def med(a, b, c):
    """JPEG-LS median edge detector: prediction from left a, up b, up-left c."""
    mx, mn = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= mx, mn, np.where(c <= mn, mx, a + b - c))


def pack(src, dst):
    rows = list(csv.DictReader(open(os.path.join(src, "labels.csv"), newline="")))
    keep = np.array([r["split"] != "test" for r in rows])
    x = np.fromfile(os.path.join(src, "images.u8"), np.uint8).reshape(-1, SIZE, SIZE)[keep].astype(np.int16)
    a, b, c = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    a[:, :, 1:], b[:, 1:, :], c[:, 1:, 1:] = x[:, :, :-1], x[:, :-1, :], x[:, :-1, :-1]
    r = ((x - med(a, b, c)) % 256).astype(np.uint8)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "resid.xz"), "wb") as f:
        f.write(lzma.compress(r.tobytes(), preset=9 | lzma.PRESET_EXTREME))
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(r_ for r_ in rows if r_["split"] != "test")
    with open(os.path.join(dst, "labels.csv.xz"), "wb") as f:
        f.write(lzma.compress(out.getvalue().encode()))
    print(f"packed {int(keep.sum())} faces (train+val) into {dst}")


def unpack(src, dst):
    r = np.frombuffer(lzma.decompress(open(os.path.join(src, "resid.xz"), "rb").read()), np.uint8)
    r = r.reshape(-1, SIZE, SIZE).astype(np.int16)
    x = np.zeros_like(r)
    zero = np.zeros(len(x), np.int16)
    for i in range(SIZE):  # raster order, all faces at once
        for j in range(SIZE):
            a = x[:, i, j - 1] if j else zero
            b = x[:, i - 1, j] if i else zero
            c = x[:, i - 1, j - 1] if i and j else zero
            x[:, i, j] = (med(a, b, c) + r[:, i, j]) % 256
    os.makedirs(dst, exist_ok=True)
    x.astype(np.uint8).tofile(os.path.join(dst, "images.u8"))
    with open(os.path.join(dst, "labels.csv"), "wb") as f:
        f.write(lzma.decompress(open(os.path.join(src, "labels.csv.xz"), "rb").read()))
    print(f"unpacked {len(x)} faces into {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(sys.argv[2], sys.argv[3])
