#!/usr/bin/env python3
"""How the shipped expression models read faces under production-line conditions: uneven light, low light with
sensor noise, small faces, blur, JPEG. A measurement, not part of `train.sh all`: the model card's "Beyond FER+"
reports it.

    python robust.py --data ../shared/data/ferplus [--split val] [--models A.onnx,B.onnx] [--limit N]
        [--framing | --prior=-0.25,0,0.25 | --write DIR] [--mirror]

Each FER+ face (48x48 grey) is put back at a camera's resolution (96 px, bicubic; small faces: scaled down),
the condition is applied there, the result is quantized to 8 bits like a camera's output and scaled to the
model's 48x48 with an antialiased bilinear filter (the firmware's crop path: fast_image_resize's bilinear
convolution; a small face is scaled up bilinearly), then standardized per image as the firmware does. The first
two rows are the baselines: the FER+ face as it is, and the round trip through 96 px alone. Each condition's
randomness (which side the light comes from, the noise) is seeded, so every model reads the same faces.
onnxruntime runs the ONNX files (tract's outputs match it: tests/eval.rs). Choices are made on val; `--split
test` only reports.

The conditions are simulations of real footage, not real footage: they tell which conditions cost the student
most and whether a change helps there, not the accuracy on a given line.
"""
import argparse
import io
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from data import FerPlus, light_field, standardize  # noqa: E402
from evaluate import metrics, ort_run, ort_session  # noqa: E402

SIZE = 48


def resize(x, s):
    return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)


def q8(x):
    return (x.clamp(0, 1) * 255).round() / 255


def jpeg(x, quality):
    from PIL import Image
    out = []
    for f in x[:, 0].numpy():
        buf = io.BytesIO()
        Image.fromarray((f * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255)
    return torch.from_numpy(np.stack(out))[:, None]


def sensor(x, g, level, full_well=400.0, read=3.0):
    """Low light: the scene reaches the sensor at `level` of full exposure (shot noise on level * full_well
    electrons, read noise in electrons, 8-bit output), and the camera's gain brings it back up."""
    e = x * level * full_well
    e = torch.poisson(e, generator=g) + torch.randn(e.shape, generator=g) * read
    return q8(e / (level * full_well) * level) / level


def lighting(x, g, kind, low):
    """Fixed uneven-light conditions: "side" (a ramp, lit from the left or the right at random),
    "shadow" (one half at `low`, edge within 20% of the centre), "top" (lit from above, chin at `low`)."""
    n, dev = x.shape[0], x.device
    r = lambda: torch.rand(n, generator=g).to(dev)
    lr = torch.where(r() < 0.5, 0.0, math.pi)
    full = lambda val: torch.full((n,), val, device=dev)
    if kind == "side":
        f = light_field(n, x.shape[-1], lr, full(low), full(0.0), full(0.0), dev)
    elif kind == "shadow":
        f = light_field(n, x.shape[-1], lr, full(low), full(12.0), (r() - 0.5) * 0.4, dev)
    elif kind == "top":
        f = light_field(n, x.shape[-1], full(-math.pi / 2), full(low), full(0.0), full(0.0), dev)
    else:
        raise ValueError(kind)
    return x * f


def blur(x, kernel):
    k = torch.as_tensor(kernel, dtype=x.dtype)
    k = (k / k.sum())[None, None]
    ph, pw = k.shape[-2] // 2, k.shape[-1] // 2
    return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="replicate"), k)


def gauss(sigma):
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return g[:, None] * g[None, :]


# name -> (face size in camera pixels, function of (x at that size, generator)). Sizes and strengths are what a
# fixed camera over a work place sees: faces 60-120 px across at 720p, lamps overhead or to one side.
CONDITIONS = {
    "FER+ face as it is (48 px)": (48, lambda x, g: x),
    "clean (96 px)": (96, lambda x, g: x),
    "side light (far side at 25%)": (96, lambda x, g: lighting(x, g, "side", 0.25)),
    "half in shadow (30%)": (96, lambda x, g: lighting(x, g, "shadow", 0.30)),
    "overhead light (chin at 40%)": (96, lambda x, g: lighting(x, g, "top", 0.40)),
    "overexposed (x1.7, clipped)": (96, lambda x, g: x * 1.7),
    "low light (10% exposure, gain)": (96, lambda x, g: sensor(x, g, 0.10)),
    "motion blur (9 px)": (96, lambda x, g: blur(x, torch.ones(1, 9))),
    "defocus (sigma 2.5 px)": (96, lambda x, g: blur(x, gauss(2.5))),
    "JPEG quality 20": (96, lambda x, g: jpeg(q8(x), 20)),
    "face 32 px (the firmware's expression.min_face)": (32, lambda x, g: x),
    "face 24 px": (24, lambda x, g: x),
    "face 16 px": (16, lambda x, g: x),
}


def reframe(x, scale, dy=0.0, dx=0.0):
    """The face as another crop convention cuts it: a square `scale` times the firmware's crop, its centre moved by
    `dy` (down when positive) and `dx` (right) of the crop's side, scaled back to the same size (antialiased).
    Outside the FER+ crop there are no pixels, so a looser crop replicates the edge rows and columns."""
    n = x.shape[-1]
    side = int(round(n * scale))
    pad = max(0, int(np.ceil((side - n) / 2 + max(abs(dx), abs(dy)) * n))) + 2
    y = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    y0 = int(round(pad + n / 2 + dy * n - side / 2))
    x0 = int(round(pad + n / 2 + dx * n - side / 2))
    return resize(y[..., y0:y0 + side, x0:x0 + side], n)


# name -> (face size, function): the crop convention, at the clean 96 px camera face (`--framing`).
FRAMING = {
    "crop 1.00x (the firmware's)": (96, lambda x, g: x),
    "crop 0.70x (tighter)": (96, lambda x, g: reframe(x, 0.70)),
    "crop 0.85x": (96, lambda x, g: reframe(x, 0.85)),
    "crop 1.15x (looser)": (96, lambda x, g: reframe(x, 1.15)),
    "crop 1.30x": (96, lambda x, g: reframe(x, 1.30)),
    "crop 1.40x": (96, lambda x, g: reframe(x, 1.40)),
    "crop moved up 10%": (96, lambda x, g: reframe(x, 1.0, dy=-0.10)),
    "crop moved down 10%": (96, lambda x, g: reframe(x, 1.0, dy=0.10)),
    "crop moved sideways 10%": (96, lambda x, g: reframe(x, 1.0, dx=0.10)),
}


def camera(x, face, fn, g):
    """FER+ face -> camera pixels at `face` px -> condition -> 8 bits -> the firmware's 48x48 crop."""
    up = lambda z, s: F.interpolate(z, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)
    y = up(x, face) if face > SIZE else resize(x, face)
    y = q8(fn(y, g))
    return resize(y, SIZE) if face >= SIZE else F.interpolate(y, size=(SIZE, SIZE), mode="bilinear",
                                                              align_corners=False)


def slug(name):
    return "".join(c if c.isalnum() or c == "." else "_" for c in name.split(" (")[0]).strip("_")


def write(a, ds, idx, x, table):
    """Each condition's faces, as the camera and crop would give them (before standardization), as PNG files."""
    from PIL import Image
    want = [c for c in a.conditions.split(",") if c]
    for c in [c for c in table if not want or any(c.startswith(w) for w in want)]:
        face, fn = table[c]
        g = torch.Generator().manual_seed(a.seed)
        faces = (camera(x, face, fn, g)[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        d = os.path.join(a.write, slug(c))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "labels.csv"), "w") as f:
            f.write("path,label\n")
            for i, (face_px, row) in enumerate(zip(faces, idx)):
                Image.fromarray(face_px).save(os.path.join(d, f"{i:05d}.png"))
                f.write(f"{i:05d}.png,{ds.raw[row]}\n")
        print(f"{c}: {len(faces)} faces -> {d}", flush=True)


def prior_table(a, ds, x, true, models, sessions):
    """Each model's accuracy / macro-F1 and share of faces called neutral under logit adjustments -t*log(prior)."""
    log_prior = np.log(ds.train_prior())
    logits = {m: ort_run(sessions[m], standardize(x)) for m in models}
    print(f"{len(true)} {a.split} faces, truly neutral {np.mean(true == 0):.3f}; accuracy / macro-F1 (share called "
          "neutral) per model (onnxruntime)")
    print("| t | " + " | ".join(os.path.basename(m) for m in models) + " |")
    print("|---|" + "---|" * len(models))
    for t in [float(v) for v in a.prior.split(",")]:
        cells = []
        for m in models:
            pred = (logits[m] - t * log_prior).argmax(1)
            r = metrics(pred, true)
            cells.append(f"{r['accuracy']:.4f} / {r['macro_f1']:.4f} ({np.mean(pred == 0):.3f})")
        print(f"| {t:+.2f} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "ferplus"))
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--models", default=",".join(os.path.join(HERE, "..", f) for f in (
        "mien_student_int8.onnx", "mien_student_fp32.onnx", "mien_teacher_fp32.onnx")))
    p.add_argument("--conditions", default="", help="comma-separated names (prefixes) to run; default all")
    p.add_argument("--framing", action="store_true",
                   help="instead of the camera conditions: the crop convention (scale 0.7-1.4, shifts)")
    p.add_argument("--write", default="",
                   help="instead of running models: write each condition's faces as 48x48 PNGs with a labels.csv "
                   "into DIR/<condition>/, for the firmware (`mien eval --images DIR/c --labels DIR/c/labels.csv "
                   "--crops [--reframe]`)")
    p.add_argument("--prior", default="",
                   help="instead of the conditions: the clean faces under logit adjustments -t*log(train prior), "
                   "one row per t of this comma-separated list (e.g. -0.25,0,0.25,0.5), with the share called "
                   "neutral (the export folds in the t it picks on val; the shipped student's is 0)")
    p.add_argument("--mirror", action="store_true",
                   help="each model reads every face as it is and mirrored left to right, and the logits are averaged "
                   "(a test-time flip; the firmware reads each face once: EXPERIMENTS.md, \"Mirrored reading\")")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    ds = FerPlus(a.data)
    idx = ds.indices(a.split)[:a.limit or None]
    x = ds.batch(idx)
    true = ds.label[idx]
    if a.write:
        write(a, ds, idx, x, FRAMING if a.framing else CONDITIONS)
        return
    models = [m for m in a.models.split(",") if m]
    sessions = {m: ort_session(m) for m in models}
    if a.prior:
        prior_table(a, ds, x, true, models, sessions)
        return
    want = [c for c in a.conditions.split(",") if c]
    table = FRAMING if a.framing else CONDITIONS
    conds = [c for c in table if not want or any(c.startswith(w) for w in want)]
    print(f"{len(idx)} {a.split} faces; accuracy / macro-F1 per model (onnxruntime)")
    # Columns are named by file name, or by path where two models share one (a candidate beside the shipped file).
    names = [os.path.basename(m) for m in models]
    if len(set(names)) < len(names):
        names = [os.path.relpath(m) for m in models]
    print("| condition | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(models))
    base = {}
    for c in conds:
        face, fn = table[c]
        g = torch.Generator().manual_seed(a.seed)
        faces = standardize(camera(x, face, fn, g))
        cells = []
        for m in models:
            logits = ort_run(sessions[m], faces)
            if a.mirror:
                logits = (logits + ort_run(sessions[m], torch.flip(faces, dims=[-1]))) / 2
            r = metrics(logits.argmax(1), true)
            base.setdefault(m, r)
            d = r["accuracy"] - base[m]["accuracy"]
            cells.append(f"{r['accuracy']:.4f} / {r['macro_f1']:.4f}" + (f" ({d * 100:+.1f})" if c != conds[0] else ""))
        print(f"| {c} | " + " | ".join(cells) + " |", flush=True)
    print("(in brackets: points of accuracy against the first condition)")


if __name__ == "__main__":
    main()
