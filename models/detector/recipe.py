#!/usr/bin/env python3
"""mien's own face detector (issue 51; its card is README.md beside this file): one pass of a small network over
the frame at its own size finds faces from 16 px tall, where BlazeFace needs an image pyramid whose first level is
larger than the frame.

    models/detector/train.sh                       # backgrounds, both phases, export, the checks (about 45 min, CPU)
    models/.venv/bin/python models/detector/recipe.py train --work W --steps 2500 --bf16
    models/.venv/bin/python models/detector/recipe.py train --work W/marks --init W/detector.pt --marks 0.3 \
        --steps 1500 --lr 1e-3 --bf16                  # phase 2 (W/marks/backgrounds -> ../backgrounds)
    models/.venv/bin/python models/detector/recipe.py export --work W/marks --out models/mien_face.onnx
    models/.venv/bin/python models/detector/recipe.py check --model models/mien_face.onnx --work W
    models/.venv/bin/python models/detector/recipe.py scales --model models/mien_face.onnx --work W
    models/.venv/bin/python models/detector/recipe.py train --work W/tune --from-onnx models/mien_face.onnx \
        --roll 0.5 --marks 0.3 --steps 1500 --lr 3e-4 --seed 4 --bf16   # turned faces, candidate g (W/tune/backgrounds)

The network keeps YuNet's layout and size class (benches/detector_budget.py measured its speed): a stride-2 stem,
depthwise-separable blocks, max-pool between stages, and a light top-down path so the stride-8 head sees
context. Each of the heads at strides 8, 16 and 32 gives, per cell, a face score and the distances from the cell's
centre to the face box's four sides (anchor-free, as FCOS and YuNet). The export folds batch norm, the sigmoid and
the distances' scale into the graph: output `s8`, `s16`, `s32`, each 1x5xH/sxW/s, channel 0 the score in [0, 1],
channels 1-4 left, top, right, bottom in input pixels. The input is 1x3xHxW RGB in [0, 1], H and W multiples of
32. The firmware (`src/detect/mienface.rs`, `detect.kind = "mien-face"`) decodes the cells and runs further passes
on the frame scaled down by `PASS_STEP` for faces larger than one pass is trusted with.

The training frames are made on the fly, never read from disk: faces pasted at 8 to 420 px on backgrounds, some
whole rectangles (as the scale sweep pastes them), some faded out at an ellipse's edge (so that a face, not a
pasted rectangle, is what the network learns), with rectangles of scrambled faces as negatives. Phase 2 draws
marks over some faces, negatives and background patches (`Synth.mark`: a face mesh, boxes and captions, glasses,
masks, hands), so that a marked face is still found and a mark alone is not a face. `--roll` (not in the shipped
model: docs/privacy.md, "Faces turned in the picture's plane") turns a share of the faces and negatives in the
picture's plane, the box taught being that of the ellipse inscribed in the turned face. The faces:
`../shared/data/site-colour` (colour close-ups, files whose sorted index is not a multiple of 5) and FER+ faces
(grey, train rows from 20,000 on and val; never test). The scale sweep (`examples/scale_sweep.rs`) pastes the
rest: site-colour files whose index is a multiple of 5 and FER+ train rows under 20,000, so what it measures was
not trained on; `check` and `scales` here use the same held-out faces. The backgrounds are photographs from
Debian's desktop background packages (`fetch_backgrounds.sh`) and scikit-image's bundled pictures without faces.
"""
import argparse
import csv
import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
STRIDES = (8, 16, 32)
# Face sizes (the box's longer side, px) each head is trained for; they overlap, so a face near an edge of a range
# is seen by two heads and NMS keeps one.
RANGES = {8: (0, 56), 16: (28, 128), 32: (64, 400)}
SMALLEST = 8  # faces smaller than this are neither positives nor negatives
# The firmware's passes (src/detect/mienface.rs, which says how they were measured): one pass is trusted with faces
# of MIN_MODEL_FACE to MAX_MODEL_FACE input pixels; each further pass runs the frame PASS_STEP times smaller.
MIN_MODEL_FACE, MAX_MODEL_FACE, PASS_STEP = 16.0, 200.0, 3.0
CANVAS = 256


def shared_dir():
    return os.environ.get("MIEN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))


# ---------------------------------------------------------------------------------------------------------------
# The network


def sep(cin, cout):
    """Depthwise 3x3 then pointwise 1x1, each with batch norm and ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FaceNet(nn.Module):
    def __init__(self, width=1.0):
        super().__init__()
        c = [max(8, int(round(v * width / 8)) * 8) for v in (16, 32, 64, 64, 64)]
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c[0]),
                                  nn.ReLU(), sep(c[0], c[0]))
        self.s4 = nn.Sequential(nn.MaxPool2d(2), sep(c[0], c[1]), sep(c[1], c[1]))
        self.s8 = nn.Sequential(nn.MaxPool2d(2), sep(c[1], c[2]), sep(c[2], c[2]))
        self.s16 = nn.Sequential(nn.MaxPool2d(2), sep(c[2], c[3]), sep(c[3], c[3]))
        self.s32 = nn.Sequential(nn.MaxPool2d(2), sep(c[3], c[4]), sep(c[4], c[4]), sep(c[4], c[4]))
        # top-down: the coarser level, upsampled, added to the finer one before its head
        self.lat16 = nn.Conv2d(c[4], c[3], 1)
        self.lat8 = nn.Conv2d(c[3], c[2], 1)
        self.mix = nn.ModuleList([sep(c[2], c[2]), sep(c[3], c[3]), sep(c[4], c[4])])
        self.heads = nn.ModuleList(nn.Conv2d(ch, 5, 1) for ch in (c[2], c[3], c[4]))
        for h in self.heads:  # start from a low face score everywhere (focal loss's prior)
            nn.init.constant_(h.bias[:1], -4.6)
            nn.init.constant_(h.bias[1:], 0.0)

    def forward(self, x):
        """Raw head outputs: per level, 1x5xHxW (score logit, log-distances in strides)."""
        a = self.s8(self.s4(self.stem(x)))
        b = self.s16(a)
        c = self.s32(b)
        b = b + F.interpolate(self.lat16(c), scale_factor=2, mode="nearest")
        a = a + F.interpolate(self.lat8(b), scale_factor=2, mode="nearest")
        return [h(m(f)) for h, m, f in zip(self.heads, self.mix, (a, b, c))]


class Exported(nn.Module):
    """What the firmware runs: scores in [0, 1] and distances in input pixels."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        outs = []
        for o, s in zip(self.net(x), STRIDES):
            outs.append(torch.cat([torch.sigmoid(o[:, :1]), torch.exp(o[:, 1:].clamp(max=6.0)) * s], 1))
        return tuple(outs)


# ---------------------------------------------------------------------------------------------------------------
# Faces and backgrounds


def load_faces(shared, held_out=False):
    """Face sources as (image HxWx3 uint8, is_colour). Training: site-colour files with index % 5 != 0 and FER+
    train rows >= 20,000 plus val (not-a-face rows left out); held_out: site-colour index % 5 == 0 and FER+ train
    rows under 20,000 (what the scale sweep pastes)."""
    files = sorted(glob.glob(os.path.join(shared, "data/site-colour/images/*.jpg")))
    site = [np.asarray(Image.open(f).convert("RGB")) for i, f in enumerate(files) if (i % 5 == 0) == held_out]
    px = np.fromfile(os.path.join(shared, "data/ferplus/images.u8"), np.uint8).reshape(-1, 48, 48)
    rows = []
    with open(os.path.join(shared, "data/ferplus/labels.csv"), newline="") as f:
        for r in csv.DictReader(f):
            i, split, nf = int(r["index"]), r["split"], r["label"] == "NF"
            if nf:
                continue
            if held_out and split == "train" and i < 20000:
                rows.append(i)
            elif not held_out and ((split == "train" and i >= 20000) or split == "val"):
                rows.append(i)
    return site, px[rows]


def load_backgrounds(work):
    """Photographs without faces, each at most 1024 px on its longer side: Debian's background packages (unpacked
    by fetch_backgrounds.sh into WORK/backgrounds) and scikit-image's face-free bundled pictures."""
    out = []
    for f in sorted(glob.glob(os.path.join(work, "backgrounds", "**", "*.*"), recursive=True)):
        if not f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
            continue
        try:
            im = Image.open(f).convert("RGB")
        except Exception:
            continue
        im.thumbnail((1024, 1024))
        out.append(np.asarray(im))
    import skimage.data as sd
    for name in ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "coins", "moon",
                 "page", "text", "camera", "brick", "grass", "gravel", "rocket"):
        try:
            a = getattr(sd, name)()
        except Exception:
            continue
        if name == "camera":  # a man with a camera, seen from the side: a face; keep the lower half
            a = a[300:]
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        out.append(np.ascontiguousarray(a))
    samples = os.path.join(HERE, "..", "..", "samples", "clip")
    for i in range(20, 24):  # the clip's face-free frames
        p = os.path.join(samples, f"frame_{i:04d}.jpg")
        if os.path.exists(p):
            out.append(np.asarray(Image.open(p).convert("RGB")))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Training frames


class Synth:
    """Training frames and their targets, made on the fly from a seeded generator."""

    def __init__(self, site, fer, backgrounds, size=CANVAS, marks=0.0, roll=0.0, roll_max=90.0):
        self.site, self.fer, self.bgs, self.size = site, fer, backgrounds, size
        # the share of faces, negatives and background patches that get marks drawn over them (`mark`)
        self.marks = marks
        # the share of faces and negatives turned in the picture's plane (a head tilted to the shoulder), by up to
        # roll_max degrees either way (uniform); the rest are pasted as cut
        self.roll, self.roll_max = roll, roll_max
        self.fonts = {}

    def font(self, px):
        px = int(min(max(px, 6), 48))
        if px not in self.fonts:
            try:
                self.fonts[px] = ImageFont.load_default(size=px)
            except TypeError:  # Pillow without FreeType: the fixed bitmap font
                self.fonts[px] = ImageFont.load_default()
        return self.fonts[px]

    def mark(self, img, rng):
        """Draw over `img` (a PIL image, changed in place) what covers faces in pictures and on a site: what a
        viewer's software draws (a landmark mesh's dots and lines, a box with a caption), a band (glasses, a visor,
        a mask) or a blob from one side (a hand, a shoulder). None covers more than about 40% of it. On a face it is
        still a face to find; on a background or a negative it is none, so that the marks are not what a face is."""
        d = ImageDraw.Draw(img)
        w, h = img.size
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        if kind == 0:
            n = int(rng.integers(5, 14))
            r = max(0.4, min(w, h) / n * rng.uniform(0.06, 0.16))
            pts = [((i + 0.5 + rng.uniform(-0.3, 0.3)) * w / n,
                    (j + 0.5 + rng.uniform(-0.3, 0.3)) * h / n) for j in range(n) for i in range(n)]
            keep = rng.random(len(pts)) < rng.uniform(0.4, 1.0)
            for k, (x, y) in enumerate(pts):
                if not keep[k]:
                    continue
                d.ellipse([x - r, y - r, x + r, y + r], fill=col)
                if k % n + 1 < n and rng.random() < 0.4:
                    d.line([(x, y), pts[k + 1]], fill=col, width=1)
                if k + n < len(pts) and rng.random() < 0.4:
                    d.line([(x, y), pts[k + n]], fill=col, width=1)
        elif kind == 1:
            lw = max(1, int(min(w, h) / rng.uniform(30, 80)))
            x0, y0 = rng.uniform(-0.1, 0.2) * w, rng.uniform(-0.1, 0.2) * h
            d.rectangle([x0, y0, w - rng.uniform(-0.1, 0.2) * w, h - rng.uniform(-0.1, 0.2) * h], outline=col, width=lw)
            f = self.font(h * rng.uniform(0.06, 0.16))
            for _ in range(int(rng.integers(1, 6))):
                txt = "".join(chr(int(c)) for c in rng.integers(33, 123, int(rng.integers(3, 14))))
                d.text((rng.uniform(0, 0.6) * w, rng.uniform(0, 0.85) * h), txt, fill=col, font=f)
        elif kind == 2:
            band = h * rng.uniform(0.12, 0.35)
            y0 = h * (rng.uniform(0.25, 0.4) if rng.random() < 0.5 else rng.uniform(0.55, 0.7))
            d.rectangle([rng.uniform(-0.1, 0.15) * w, y0, w * rng.uniform(0.85, 1.1), y0 + band], fill=col)
        else:
            side = rng.integers(4)
            rw, rh = w * rng.uniform(0.25, 0.45), h * rng.uniform(0.25, 0.45)
            cx = [0, w, rng.uniform(0, w), rng.uniform(0, w)][side]
            cy = [rng.uniform(0, h), rng.uniform(0, h), h, h][side]
            d.ellipse([cx - rw, cy - rh, cx + rw, cy + rh], fill=col)

    def face(self, rng):
        if rng.random() < 0.5:
            img = self.site[rng.integers(len(self.site))]
        else:
            g = self.fer[rng.integers(len(self.fer))]
            img = np.stack([g] * 3, -1)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        return img

    def background(self, rng):
        s = self.size
        r = rng.random()
        if r < 0.55:
            bg = self.bgs[rng.integers(len(self.bgs))]
            h, w = bg.shape[:2]
            side = int(min(h, w) * math.exp(rng.uniform(math.log(0.15), 0)))
            side = max(side, 16)
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            out = np.asarray(Image.fromarray(bg[y:y + side, x:x + side]).resize((s, s), Image.BILINEAR))
            return out.astype(np.float32)
        if r < 0.75:  # flat or graded colour with noise
            c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            t = np.linspace(0, 1, s)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, s)[None, :, None]
            out = c0 * (1 - t) + c1 * t + np.zeros((s, s, 3))
            return (out + rng.normal(0, rng.uniform(0, 12), (s, s, 3))).astype(np.float32)
        if r < 0.9:  # smooth random colour field
            k = int(rng.integers(2, 12))
            small = rng.uniform(0, 255, (k, k, 3)).astype(np.uint8)
            return np.asarray(Image.fromarray(small).resize((s, s), Image.BICUBIC)).astype(np.float32)
        # a mosaic of scrambled faces: skin colours and face texture without a face's layout
        out = np.zeros((s, s, 3), np.float32)
        n = int(rng.integers(2, 6))
        t = s // n + 1
        for by in range(n):
            for bx in range(n):
                out[by * t:(by + 1) * t, bx * t:(bx + 1) * t] = self.scrambled(rng, t)[:s - by * t, :s - bx * t]
        return out

    def scrambled(self, rng, side):
        """A face cut in 4x4 to 7x7 blocks, shuffled: not a face."""
        img = np.asarray(Image.fromarray(np.ascontiguousarray(self.face(rng))).resize((side, side), Image.BILINEAR))
        k = int(rng.integers(4, 8))
        edges = np.linspace(0, side, k + 1).astype(int)
        blocks = [(edges[i], edges[i + 1], edges[j], edges[j + 1]) for i in range(k) for j in range(k)]
        order = rng.permutation(len(blocks))
        out = np.array(img)
        for (y0, y1, x0, x1), o in zip(blocks, order):
            sy0, sy1, sx0, sx1 = blocks[o]
            hh, ww = min(y1 - y0, sy1 - sy0), min(x1 - x0, sx1 - sx0)
            out[y0:y0 + hh, x0:x0 + ww] = img[sy0:sy0 + hh, sx0:sx0 + ww]
        return out

    def turn(self, rng):
        """The roll (degrees) for the next face or negative: 0 for most, uniform within roll_max for a share. Without
        --roll it draws nothing, so the frames are those the shipped model was trained on."""
        if self.roll <= 0:
            return 0.0
        return float(rng.uniform(-self.roll_max, self.roll_max)) if rng.random() < self.roll else 0.0

    def paste(self, canvas, img, x, y, w, h, rng, ellipse, roll=0.0):
        """Paste `img` scaled to w x h at (x, y), turned by `roll` degrees about its centre; returns the face's
        box: for a turned face, the bounding box of the ellipse inscribed in the turned picture (the face, not the
        picture's corners: a round face's box keeps its size as it turns, as an upright face's does)."""
        s = self.size
        iw, ih = max(1, int(round(w))), max(1, int(round(h)))
        src = Image.fromarray(np.ascontiguousarray(img)).resize((iw, ih), Image.BILINEAR)
        if rng.random() < self.marks:
            self.mark(src, rng)
        # per-face light and colour (drawn in the order the shipped model's frames drew them)
        gain, offset, colour = rng.uniform(0.5, 1.4), rng.uniform(-30, 30), rng.uniform(0.85, 1.15, 3)
        if ellipse:
            yy, xx = np.mgrid[0:ih, 0:iw].astype(np.float32)
            d = np.sqrt(((xx + 0.5) / iw * 2 - 1) ** 2 + ((yy + 0.5) / ih * 2 - 1) ** 2)
            alpha = np.clip((1.15 - d) / rng.uniform(0.1, 0.35), 0, 1).astype(np.float32)
        else:
            alpha = np.ones((ih, iw), np.float32)
        box = (x, y, x + w, y + h)
        if roll:
            # PIL turns anticlockwise for positive angles; expand keeps the corners, the centre stays the centre
            src = src.rotate(roll, Image.BILINEAR, expand=True)
            alpha = np.asarray(Image.fromarray(alpha, "F").rotate(roll, Image.BILINEAR, expand=True))
            cx, cy = x + w / 2, y + h / 2
            t = math.radians(roll)
            hw = math.hypot(w * math.cos(t), h * math.sin(t)) / 2
            hh = math.hypot(w * math.sin(t), h * math.cos(t)) / 2
            box = (cx - hw, cy - hh, cx + hw, cy + hh)
            x, y = cx - src.size[0] / 2, cy - src.size[1] / 2
            iw, ih = src.size
        src = (np.asarray(src, np.float32) * gain + offset) * colour
        x0, y0 = int(round(x)), int(round(y))
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(s, x0 + iw), min(s, y0 + ih)
        if cx1 <= cx0 or cy1 <= cy0:
            return box
        part = src[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        a = alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0, None]
        canvas[cy0:cy1, cx0:cx1] = canvas[cy0:cy1, cx0:cx1] * (1 - a) + part * a
        return box

    def sample(self, rng):
        s = self.size
        canvas = self.background(rng)
        boxes = []
        r = rng.random()
        if r < 0.08:
            n, lo, hi = 0, 8, 8
        elif r < 0.45:
            n, lo, hi = 1, 8, 420
        elif r < 0.75:
            n, lo, hi = int(rng.integers(2, 6)), 8, 160
        else:
            n, lo, hi = int(rng.integers(6, 30)), 8, 48
        # marks on the background (no face under them)
        if self.marks > 0:
            for _ in range(int(rng.integers(0, 3))):
                side = int(math.exp(rng.uniform(math.log(12), math.log(220))))
                x, y = int(rng.integers(0, s - min(side, s) + 1)), int(rng.integers(0, s - min(side, s) + 1))
                patch = Image.fromarray(np.clip(canvas[y:y + side, x:x + side], 0, 255).astype(np.uint8))
                self.mark(patch, rng)
                canvas[y:y + side, x:x + side] = np.asarray(patch, np.float32)
        # negatives first, so faces may cover them
        for _ in range(int(rng.integers(0, 4))):
            side = math.exp(rng.uniform(math.log(10), math.log(200)))
            x, y = rng.uniform(-0.2 * side, s - 0.8 * side), rng.uniform(-0.2 * side, s - 0.8 * side)
            self.paste(canvas, self.scrambled(rng, max(4, int(side))), x, y, side, side, rng, rng.random() < 0.5,
                       self.turn(rng))
        for _ in range(n):
            side = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            img = self.face(rng)
            ar = img.shape[1] / img.shape[0] * rng.uniform(0.9, 1.1)
            w, h = side * ar, side
            roll = self.turn(rng)
            t = math.radians(roll)
            # the room the turned picture needs about the same centre (paste returns the box taught)
            bw, bh = abs(w * math.cos(t)) + abs(h * math.sin(t)), abs(w * math.sin(t)) + abs(h * math.cos(t))
            for _ in range(20):
                # up to a quarter of the face may run off the frame (a close-up: on any side)
                x = rng.uniform(min(0.0, s - bw) - 0.25 * bw, max(0.0, s - bw) + 0.25 * bw)
                y = rng.uniform(min(0.0, s - bh) - 0.25 * bh, max(0.0, s - bh) + 0.25 * bh)
                b = (x, y, x + bw, y + bh)
                if all(iou(b, o) < 0.15 for o in boxes):
                    break
            else:
                continue
            b = self.paste(canvas, img, x + (bw - w) / 2, y + (bh - h) / 2, w, h, rng, rng.random() < 0.5, roll)
            boxes.append(b)
        # the whole frame: grey, blur, noise, gamma
        if rng.random() < 0.3:
            canvas = canvas @ np.array([0.299, 0.587, 0.114], np.float32)[:, None] * np.ones((1, 3), np.float32)
        if rng.random() < 0.2:
            canvas = np.asarray(Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))), np.float32)
        canvas = canvas + rng.normal(0, rng.uniform(0, 8), canvas.shape)
        canvas = np.clip(canvas, 0, 255) / 255.0
        if rng.random() < 0.3:
            canvas = canvas ** rng.uniform(0.6, 1.6)
        return canvas.astype(np.float32).transpose(2, 0, 1), np.array(boxes, np.float32).reshape(-1, 4)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def targets(boxes, size):
    """Per level: score target (1 face, 0 background, -1 ignored) HxW and box target 4xHxW (left, top, right,
    bottom distances in input px). A cell is positive for a face in its level's size range when its centre lies
    inside the box and within 1.5 strides of the box's centre (the nearest cell always); the rest of the box is
    ignored, so that no face's own pixels are taught as background."""
    out = []
    for s in STRIDES:
        n = size // s
        score = np.zeros((n, n), np.float32)
        box = np.zeros((4, n, n), np.float32)
        area = np.full((n, n), np.inf, np.float32)
        cs = (np.arange(n) + 0.5) * s
        lo, hi = RANGES[s]
        for b in boxes:
            x0, y0, x1, y1 = b
            side = max(x1 - x0, y1 - y0)
            # vis: the cells the box covers (clamped to the frame)
            ix0, ix1 = max(0, int(x0 // s)), min(n, int(math.ceil(x1 / s)))
            iy0, iy1 = max(0, int(y0 // s)), min(n, int(math.ceil(y1 / s)))
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            if side < SMALLEST or not (lo <= side < hi):
                # out of this level's range: neither taught as a face nor as background, near the range's ends
                near = side < SMALLEST or (side < lo and side > lo * 0.6) or (side >= hi and side < hi * 1.6)
                if near:
                    sub = score[iy0:iy1, ix0:ix1]
                    sub[sub == 0] = -1
                continue
            gx, gy = (x0 + x1) / 2, (y0 + y1) / 2
            r = 1.5 * s
            a = (x1 - x0) * (y1 - y0)
            sub = score[iy0:iy1, ix0:ix1]
            sub[sub == 0] = -1
            cx, cy = cs[ix0:ix1][None, :], cs[iy0:iy1][:, None]
            inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
            pos = inside & (np.abs(cx - gx) <= r) & (np.abs(cy - gy) <= r)
            jx, jy = int(np.clip(gx // s, 0, n - 1)), int(np.clip(gy // s, 0, n - 1))
            if ix0 <= jx < ix1 and iy0 <= jy < iy1:
                pos[jy - iy0, jx - ix0] = True
            pos &= a < area[iy0:iy1, ix0:ix1]
            ys, xs = np.nonzero(pos)
            ys, xs = ys + iy0, xs + ix0
            score[ys, xs] = 1
            area[ys, xs] = a
            box[0, ys, xs] = np.maximum(cs[xs] - x0, 1.0)
            box[1, ys, xs] = np.maximum(cs[ys] - y0, 1.0)
            box[2, ys, xs] = np.maximum(x1 - cs[xs], 1.0)
            box[3, ys, xs] = np.maximum(y1 - cs[ys], 1.0)
        out.append((score, box))
    return out


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, synth, seed):
        self.synth, self.seed = synth, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            img, boxes = self.synth.sample(rng)
            t = targets(boxes, self.synth.size)
            yield (torch.from_numpy(img), *[torch.from_numpy(a) for st in t for a in st])


# ---------------------------------------------------------------------------------------------------------------
# Loss


def focal(logit, target, gamma=2.0, alpha=0.25):
    p = torch.sigmoid(logit)
    ce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    w = alpha * target + (1 - alpha) * (1 - target)
    return w * (1 - pt) ** gamma * ce


def giou_loss(pred, tgt):
    """pred, tgt: Nx4 distances (l, t, r, b) from the same point."""
    pl, pt, pr, pb = pred.unbind(1)
    tl, tt, tr, tb = tgt.unbind(1)
    pa, ta = (pl + pr) * (pt + pb), (tl + tr) * (tt + tb)
    iw, ih = torch.min(pl, tl) + torch.min(pr, tr), torch.min(pt, tt) + torch.min(pb, tb)
    inter = iw * ih
    union = pa + ta - inter
    ew, eh = torch.max(pl, tl) + torch.max(pr, tr), torch.max(pt, tt) + torch.max(pb, tb)
    enc = ew * eh
    iou_ = inter / union.clamp(min=1e-6)
    return 1 - (iou_ - (enc - union) / enc.clamp(min=1e-6))


def loss_fn(outs, batch):
    cls_sum, box_sum, npos = 0.0, 0.0, 0.0
    for k, (o, s) in enumerate(zip(outs, STRIDES)):
        score, box = batch[1 + 2 * k], batch[2 + 2 * k]
        logit = o[:, 0].float()
        keep = score >= 0
        cls_sum = cls_sum + focal(logit[keep], score[keep]).sum()
        pos = score > 0.5
        n = pos.sum()
        npos = npos + n
        if n > 0:
            pred = torch.exp(o[:, 1:].float().clamp(max=6.0)).permute(0, 2, 3, 1)[pos] * s
            tgt = box.permute(0, 2, 3, 1)[pos]
            box_sum = box_sum + giou_loss(pred, tgt).sum()
    npos = max(float(npos), 1.0)
    return cls_sum / npos, box_sum / npos


# ---------------------------------------------------------------------------------------------------------------
# Commands


def train(a):
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    site, fer = load_faces(a.shared)
    bgs = load_backgrounds(a.work)
    print(f"faces: {len(site)} site-colour, {len(fer)} FER+; {len(bgs)} backgrounds", flush=True)
    synth = Synth(site, fer, bgs, marks=a.marks, roll=a.roll, roll_max=a.roll_max)
    loader = torch.utils.data.DataLoader(Stream(synth, a.seed), batch_size=a.batch, num_workers=a.workers,
                                         persistent_workers=a.workers > 0)
    # --from-onnx: the shipped graph's weights, batch norm folded into the convolutions (fine-tuned without it)
    net = folded_net(a.width) if a.from_onnx else FaceNet(a.width)
    ckpt = os.path.join(a.work, "detector.pt")
    resuming = a.resume and os.path.exists(ckpt)
    start = 0
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.05)
    # starting weights (one of --from-onnx and --init, argparse sees to it), unless this run resumes its own
    if a.from_onnx and not resuming:
        load_onnx(net, a.from_onnx)
        print(f"weights from {a.from_onnx} (batch norm folded)", flush=True)
    if a.init and not resuming:
        st = torch.load(a.init, weights_only=False)
        assert st.get("width", 1.0) == a.width, f"{a.init}: width {st.get('width')}, not {a.width}"
        net.load_state_dict(st["net"])
        print(f"weights from {a.init} (step {st['step']} of its run)", flush=True)
    if resuming:
        st = torch.load(ckpt, weights_only=False)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        start = st["step"]
        print(f"resumed at step {start}", flush=True)
    print(f"FaceNet width {a.width}: {sum(p.numel() for p in net.parameters())} parameters", flush=True)
    # channels-last: oneDNN's depthwise and pointwise kernels on the CPU run it about 1.8x faster
    net = net.to(memory_format=torch.channels_last).train()
    t0, lc, lb, k = time.time(), 0.0, 0.0, 0
    it = iter(loader)
    for step in range(start, min(a.steps, a.stop_at or a.steps)):
        batch = next(it)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            outs = net(batch[0].contiguous(memory_format=torch.channels_last))
        c, b = loss_fn(outs, batch)
        loss = c + 2.0 * b
        b = b.item() if torch.is_tensor(b) else b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        sched.step()
        lc, lb, k = lc + c.item(), lb + float(b), k + 1
        if (step + 1) % a.log_every == 0 or step + 1 in (a.steps, a.stop_at):
            el = time.time() - t0
            print(f"step {step + 1}/{a.steps}: score {lc / k:.4f} box {lb / k:.4f} "
                  f"({k * a.batch / el:.0f} frames/s)", flush=True)
            t0, lc, lb, k = time.time(), 0.0, 0.0, 0
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1, "width": a.width, "folded": bool(a.from_onnx)}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    print(f"-> {ckpt}")


def conv_bn_pairs(m):
    """Each batch norm that follows a convolution in `m`: (its parent module, its name, the convolution)."""
    names = list(m._modules)
    for i, n in enumerate(names):
        child = m._modules[n]
        if isinstance(child, nn.BatchNorm2d) and i > 0 and isinstance(m._modules[names[i - 1]], nn.Conv2d):
            yield m, n, m._modules[names[i - 1]]
        else:
            yield from conv_bn_pairs(child)


def fold_bn(net):
    """Batch norm folded into the convolution before it, for a graph of plain convolutions."""
    for parent, name, conv in list(conv_bn_pairs(net)):
        bn = parent._modules[name]
        w = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.data = conv.weight.data * w.reshape(-1, 1, 1, 1)
        bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.bias = nn.Parameter((bias - bn.running_mean) * w + bn.bias)
        parent._modules[name] = nn.Identity()
    return net


def folded_net(width=1.0):
    """FaceNet as fold_bn leaves it: each batch norm gone, the convolution before it given a bias."""
    net = FaceNet(width)
    for parent, name, conv in list(conv_bn_pairs(net)):
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
        parent._modules[name] = nn.Identity()
    return net


def load_onnx(net, path):
    """An exported model's weights (Exported's initializers are named net.<parameter>) into folded_net()."""
    import onnx
    from onnx import numpy_helper
    w = {i.name[len("net."):]: torch.from_numpy(numpy_helper.to_array(i).copy())
         for i in onnx.load(path).graph.initializer if i.name.startswith("net.")}
    missing = set(net.state_dict()) ^ set(w)
    assert not missing, f"{path}: not this network's layout ({sorted(missing)[:4]})"
    net.load_state_dict(w)


def export(a):
    st = torch.load(os.path.join(a.work, "detector.pt"), weights_only=False)
    # a fine-tuned model (--from-onnx) has no batch norm left to fold
    net = (folded_net if st.get("folded") else FaceNet)(st.get("width", 1.0))
    net.load_state_dict(st["net"])
    net = net.eval() if st.get("folded") else fold_bn(net.eval())
    model = Exported(net).eval()
    x = torch.rand(1, 3, 480, 640)
    with torch.no_grad():
        ref = [o.clone() for o in model(x)]
    torch.onnx.export(model, x, a.out, input_names=["input"], output_names=["s8", "s16", "s32"], opset_version=13,
                      dynamic_axes={"input": {2: "h", 3: "w"}, "s8": {2: "h8", 3: "w8"},
                                    "s16": {2: "h16", 3: "w16"}, "s32": {2: "h32", 3: "w32"}}, dynamo=False)
    import onnxruntime as ort
    got = ort.InferenceSession(a.out, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    worst = max(float(np.abs(g - r.numpy()).max() / (np.abs(r.numpy()).max() + 1e-6)) for g, r in zip(got, ref))
    assert worst < 1e-3, f"the exported graph disagrees with PyTorch ({worst})"
    sys.path.insert(0, os.path.join(HERE, "..", "expression"))
    from quantize import update_sums
    update_sums(os.path.dirname(os.path.abspath(a.out)), [a.out])
    print(f"-> {a.out} (onnxruntime agrees with PyTorch to {worst:.1e}; its hash in SHA256SUMS beside it)")


def decode(outs, thr):
    dets = []
    for o, s in zip(outs, STRIDES):
        o = o[0]
        ys, xs = np.nonzero(o[0] > thr)
        for y, x in zip(ys, xs):
            cx, cy = (x + 0.5) * s, (y + 0.5) * s
            l, t, r, b = o[1:, y, x]
            dets.append((cx - l, cy - t, cx + r, cy + b, float(o[0, y, x])))
    return nms(dets)


def nms(dets, thr=0.3):
    dets = sorted(dets, key=lambda d: -d[4])
    keep = []
    for d in dets:
        if all(iou(d, k) < thr for k in keep):
            keep.append(d)
    return keep


def pass_scales(w, h, min_face):
    """src/detect/mienface.rs's pass_scales: the first pass maps min_face to MIN_MODEL_FACE, each next one is
    PASS_STEP times smaller, the last holds a face as tall as the frame's longer side."""
    z = min(MIN_MODEL_FACE / max(min_face, 1.0), 2.0)
    v = [z]
    while MAX_MODEL_FACE / z < max(w, h) and len(v) < 16:
        z /= PASS_STEP
        v.append(z)
    return v


def detect(sess, img, thr, min_face=16):
    """The firmware's passes over an RGB frame; boxes in frame pixels (the network's own convention)."""
    h, w = img.shape[:2]
    out = []
    for z in pass_scales(w, h, min_face):
        sw, sh = max(1, round(w * z)), max(1, round(h * z))
        im = np.asarray(Image.fromarray(img).resize((sw, sh), Image.BILINEAR)) if (sw, sh) != (w, h) else img
        pw, ph = max(64, -(-sw // 32) * 32), max(64, -(-sh // 32) * 32)
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :sh, :sw] = im.transpose(2, 0, 1) / 255.0
        x[0, :, sh:, :sw] = x[0, :, sh - 1:sh, :sw]
        x[0, :, :, sw:] = x[0, :, :, sw - 1:sw]
        kx, ky = w / sw, h / sh
        for d in decode(sess.run(None, {"input": x}), thr):
            out.append((d[0] * kx, d[1] * ky, d[2] * kx, d[3] * ky, d[4]))
    return nms(out)


def held_out_frame(rng, site, fer, bgs, W, H, n, lo, hi):
    """A frame as the scale sweep composes them: `n` held-out faces of lo-hi px (log-uniform), kept apart by the
    blur margin, whole rectangles on grey or on a background, a third turned grey; returns it and the boxes."""
    if rng.random() < 0.5:
        canvas = np.full((H, W, 3), 128, np.float32)
    else:
        bg = bgs[rng.integers(len(bgs))]
        canvas = np.asarray(Image.fromarray(bg).resize((W, H), Image.BILINEAR), np.float32)
    boxes = []
    for _ in range(n):
        side = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        img = site[rng.integers(len(site))] if rng.random() < 0.6 else np.stack([fer[rng.integers(len(fer))]] * 3, -1)
        w = side * img.shape[1] / img.shape[0]
        for _ in range(100):
            x, y = rng.uniform(0, max(1, W - w)), rng.uniform(0, max(1, H - side))
            b = (x, y, x + w, y + side)
            g = (x - 0.45 * w, y - 0.45 * side, x + 1.45 * w, y + 1.45 * side)
            if all(iou(g, o) == 0 for o in boxes):
                break
        else:
            continue
        im = np.asarray(Image.fromarray(img).resize((max(1, round(w)), max(1, round(side))), Image.BILINEAR))
        x0, y0 = int(round(x)), int(round(y))
        hh, ww = min(im.shape[0], H - y0), min(im.shape[1], W - x0)
        canvas[y0:y0 + hh, x0:x0 + ww] = im[:hh, :ww]
        boxes.append(b)
    if rng.random() < 0.33:
        canvas = canvas @ np.array([0.299, 0.587, 0.114], np.float32)[:, None] * np.ones((1, 3), np.float32)
    return canvas.clip(0, 255).astype(np.uint8), boxes


def session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def check(a):
    """Recall per face size on held-out composites (faces the training never saw, pasted as the scale sweep
    pastes them) through the firmware's passes, and false detections per frame. The firmware's sweep with the
    independent reference is the judge; this is the recipe's own quick look."""
    sess = session(a.model, a.threads)
    site, fer = load_faces(a.shared, held_out=True)
    bgs = load_backgrounds(a.work)
    rng = np.random.default_rng(12345)
    edges = [12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 480]
    found, total, false = np.zeros(len(edges)), np.zeros(len(edges)), 0
    W, H = 640, 480
    for i in range(a.frames):
        n, lo, hi = [(1, 12, 480), (int(rng.integers(2, 10)), 12, 280), (int(rng.integers(10, 40)), 12, 64)][i % 3]
        canvas, boxes = held_out_frame(rng, site, fer, bgs, W, H, n, lo, hi)
        dets = detect(sess, canvas, a.threshold)
        for b in boxes:
            k = max(j for j, e in enumerate(edges) if b[3] - b[1] >= e or j == 0)
            total[k] += 1
            found[k] += any(iou(b, d) >= 0.3 for d in dets)
        false += sum(1 for d in dets if all(iou(b, d) < 0.1 for b in boxes))
    print(f"held-out composites, 640x480, threshold {a.threshold}: {a.frames} frames, "
          f"{false / a.frames:.2f} false detections a frame")
    for j, e in enumerate(edges):
        if total[j]:
            print(f"  faces {e:>3}+ px: recall {found[j] / total[j]:.3f} ({int(found[j])}/{int(total[j])})")
    print(f"  all: {found.sum() / total.sum():.3f}")


def scales(a):
    """One pass (no second, smaller pass) at one face size at a time: the range of sizes the firmware trusts one
    pass with (`MIN_MODEL_FACE`, `MAX_MODEL_FACE` in src/detect/mienface.rs)."""
    sess = session(a.model, a.threads)
    site, fer = load_faces(a.shared, held_out=True)
    bgs = load_backgrounds(a.work)
    rng = np.random.default_rng(7)
    for side in a.sizes:
        W = H = max(128, int(math.ceil(side * 1.6 / 32)) * 32)
        n_per = max(1, min(12, int((W / (side * 2.0)) ** 2)))
        found = total = 0
        while total < a.faces:
            canvas, boxes = held_out_frame(rng, site, fer, bgs, W, H, n_per, side, side * 1.001)
            x = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
            dets = decode(sess.run(None, {"input": x}), a.threshold)
            for b in boxes:
                total += 1
                found += any(iou(b, d) >= 0.3 for d in dets)
        print(f"  {side:>4} px faces in {W}x{H}: recall {found / total:.3f} ({found}/{total})", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--work", required=True)
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--width", type=float, default=1.0)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bf16", action="store_true")
    t.add_argument("--resume", action="store_true", help="continue from WORK/detector.pt (same --steps)")
    t.add_argument("--stop-at", type=int, default=0, help="stop after this step (continue later with --resume)")
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--marks", type=float, default=0.0,
                   help="share of faces, negatives and background patches with marks drawn over them (Synth.mark)")
    t.add_argument("--roll", type=float, default=0.0,
                   help="share of faces and negatives turned in the picture's plane, by up to --roll-max degrees")
    t.add_argument("--roll-max", type=float, default=90.0)
    start = t.add_mutually_exclusive_group()
    start.add_argument("--init", default="", help="start from this checkpoint's weights (a new schedule: a second phase)")
    start.add_argument("--from-onnx", default="",
                       help="start from an exported model's weights (models/mien_face.onnx), batch norm folded: fine-tuning")
    e = sub.add_parser("export")
    e.add_argument("--work", required=True)
    e.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--work", default="")
    c.add_argument("--frames", type=int, default=120)
    c.add_argument("--threshold", type=float, default=0.3)
    c.add_argument("--threads", type=int, default=1)
    sc = sub.add_parser("scales")
    sc.add_argument("--model", required=True)
    sc.add_argument("--work", default="")
    sc.add_argument("--faces", type=int, default=150)
    sc.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                    default=[8, 10, 12, 14, 16, 20, 24, 32, 48, 64, 96, 128, 160, 200, 240, 280])
    sc.add_argument("--threshold", type=float, default=0.3)
    sc.add_argument("--threads", type=int, default=1)
    for s in (t, c, sc):
        s.add_argument("--shared", default=shared_dir())
    a = p.parse_args()
    {"train": train, "export": export, "check": check, "scales": scales}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
