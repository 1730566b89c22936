#!/usr/bin/env python3
"""mien's expression model recipe: ContraWarping SSL -> teacher -> distilled student -> int8 ONNX.

    python recipe.py ssl --arch teacher      # ContraWarping pretraining on unlabelled FER+ train+val faces
    python recipe.py teacher                 # fine-tune the SSL teacher on FER+ train (soft labels), pick on val
    python recipe.py ssl --arch student      # same pretraining for the student encoder
    python recipe.py student                 # distil teacher -> student (starts from the SSL student)
    python recipe.py student --init F.onnx   # ... or trains on from an exported student (BatchNorm unfolded)
    python recipe.py student --mixup 0.5     # ... half of each batch blends of two faces (function matching)
    python recipe.py student --bank 64       # ... on 64 stored views per face, the teacher run on them once
    python recipe.py polish                  # weight averaging over 8 more short cycles (kept only if val gains 0.5 pt)
    python recipe.py export                  # fold BN, logit adjustment chosen on val, fp32 ONNX, int8 QOperator ONNX
    python recipe.py ablation                # SSL vs scratch students with 1/10/100% of the labels
    python recipe.py teachers --teachers A,B # each teacher file and their ensemble on val (and test)
    python recipe.py all                     # the above in order
    python recipe.py all --hours 2           # ... cut to 2 hours of training, most of it for the teacher, no SSL student
    python recipe.py all --hours 1.75 --bf16 # ... the one-sitting advice where the CPU has bfloat16 (a full teacher)
    python recipe.py all --hours 2 --split 186,120,60,109   # ... the stages' shares set by hand (0: skip that SSL
                                             #   stage; these are the full schedule's proportions)
    python recipe.py smoke                   # every step on a few hundred images (CI)
    python recipe.py all --resume            # continue where an interrupted run stopped (checkpoints in work/ckpt)
    python recipe.py teacher --bf16          # training's forward passes in bfloat16 (a CPU with avx512_bf16/amx/arm64
                                             #   bf16, or a GPU): 1.9-2.7x faster steps on a Zen 4 EPYC; val fp32

Seeded; uses CUDA when present, never needs it. Data: --data (default ../shared/data/ferplus). Test rows are
never read here except by `export` to write the final numbers once the model is fixed (selection uses val only).
"""
import argparse
import copy
import json
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from data import (SIZE, FerPlus, augment, apply_global, camera_effects, global_params, local_warp,  # noqa: E402
                  photometric, standardize)
from nets import EMOTIONS, Student, Teacher, conv_bn_pairs, macs  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cuda":  # a lent GPU: let cuDNN pick kernels for these fixed shapes, TF32 for convolutions and matmuls
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
ARCH = {"teacher": Teacher, "student": Student}
WIDTH = {"teacher": 24, "student": 16}  # the shipped widths; --width changes them


def bf16_native():
    """Whether this machine runs bfloat16 arithmetic in hardware: a GPU that says so, or a CPU whose flags list
    avx512_bf16 or amx_bf16 (x86) or bf16 (arm64). Elsewhere autocast emulates it, slower than fp32."""
    if DEV == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def autocast(bf16):
    """--bf16: a training step's forward passes (the net's, the teacher's, the bank's) in bfloat16 by autocast.
    Weights, the optimiser, the loss and the val passes that choose the epoch stay fp32."""
    return torch.autocast(DEV, dtype=torch.bfloat16, enabled=bf16)


def build(arch, width=0):
    return ARCH[arch](width or WIDTH[arch])


def width_of(state, arch):
    """The width a saved network was built with (files from before --width existed hold the default)."""
    return state.get("width", WIDTH[arch])


def seed_all(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def save(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- checkpoints
def ckpt_path(a, tag):
    return os.path.join(a.work, "ckpt", "".join(c if c.isalnum() else "_" for c in tag) + ".pt")


def save_ckpt(a, tag, rng, **state):
    """Everything needed to continue a stage later (`--resume`): training on a 2-core CPU spans sessions."""
    save({**state, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, ckpt_path(a, tag))


def load_ckpt(a, tag, rng):
    path = ckpt_path(a, tag)
    if not (a.resume and os.path.exists(path)):
        return None
    st = torch.load(path, map_location=DEV, weights_only=False)
    rng.bit_generator.state = st["rng"]
    torch.set_rng_state(st["torch_rng"].cpu())  # map_location puts it on the GPU; the CPU generator wants it back
    print(f"{tag}: resuming from {path}")
    return st


# ----------------------------------------------------------------------------------------------- metrics
def one_cycle(opt, lr, total, pct):
    """One-cycle schedule (warm-up for `pct` of `total` steps, then cosine decay) that also takes very short runs,
    e.g. a small --budget: PyTorch's OneCycleLR divides by zero when either phase is under one step. Schedules of
    20 steps or more are exactly OneCycleLR's."""
    total = max(total, 4)
    return torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, pct_start=min(max(pct, 2.0 / total), 0.5))


def metrics(pred, true, k=8):
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (true, pred), 1)
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    prec = np.diag(cm) / np.maximum(cm.sum(0), 1)
    f1 = np.where(recall + prec > 0, 2 * recall * prec / np.maximum(recall + prec, 1e-12), 0)
    return {"accuracy": float(np.diag(cm).sum() / cm.sum()), "macro_f1": float(f1.mean()),
            "recall": recall.tolist(), "confusion": cm.tolist(), "n": int(cm.sum())}


@torch.no_grad()
def logits_on(model, faces, bs=512):
    """Logits for faces in [0, 1] (N, 1, S, S, on the CPU), standardized per image as the firmware does."""
    model.eval()
    return torch.cat([model(standardize(faces[i:i + bs].to(DEV))).float().cpu()
                      for i in range(0, len(faces), bs)]).numpy()


def logits_of(model, ds, idx, bs=512):
    return logits_on(model, ds.batch(idx), bs)


def evaluate(model, ds, split, bias=None):
    idx = ds.indices(split)
    lg = logits_of(model, ds, idx)
    if bias is not None:
        lg = lg + bias
    return metrics(lg.argmax(1), ds.label[idx])


def fmt(m):
    if "camera" in m:
        return (f"acc={m['accuracy']:.4f} macroF1={m['macro_f1']:.4f} (mean of clean {fmt(m['clean'])} "
                f"and camera {fmt(m['camera'])})")
    return f"acc={m['accuracy']:.4f} macroF1={m['macro_f1']:.4f} recall=" + ",".join(f"{r:.2f}" for r in m["recall"])


CAMERA_VAL = {}


def val_metrics(a, model, ds):
    """The val figures that choose the epoch. With --camera, the mean of clean val and of "camera val": every val
    face through one fixed (seeded) draw of `camera_effects`, so the choice rewards robustness to what a line
    camera does and still guards the clean faces."""
    m = evaluate(model, ds, "val")
    if not a.camera:
        return m
    idx = ds.indices("val")
    if "x" not in CAMERA_VAL:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            CAMERA_VAL["x"] = camera_effects(ds.batch(idx), 1.0)
    c = metrics(logits_on(model, CAMERA_VAL["x"]).argmax(1), ds.label[idx])
    return {"accuracy": (m["accuracy"] + c["accuracy"]) / 2, "macro_f1": (m["macro_f1"] + c["macro_f1"]) / 2,
            "recall": m["recall"], "clean": m, "camera": c}


# ----------------------------------------------------------------------------------------------- SSL
class ContraWarping(nn.Module):
    """BYOL-style online/target pair with explicit negatives from local warps.

    For each face x: two global views v1=G1(x), v2=G2(x) (positives) and two warped views n1=G1(W1 x), n2=G2(W2 x)
    (negatives: the same global transform, but mouth/eyes/brows moved). The online predictor output for v1 must be
    closer to the target projection of v2 than to that of n2 (and symmetrically), as a 2-way softmax at
    temperature tau. The target is an EMA of the online encoder+projector (no gradient)."""

    def __init__(self, encoder, dim, proj=128, hidden=512):
        super().__init__()
        mlp = lambda i: nn.Sequential(nn.Linear(i, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj))
        self.online = nn.Sequential(encoder, mlp(dim))
        self.predictor = mlp(proj)
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update_target(self, m):
        for po, pt in zip(self.online.parameters(), self.target.parameters()):
            pt.mul_(m).add_(po.detach(), alpha=1 - m)
        for bo, bt in zip(self.online.buffers(), self.target.buffers()):
            bt.copy_(bo)

    def loss(self, x, tau=0.2):
        n = x.shape[0]
        t1, t2 = global_params(n, x.device), global_params(n, x.device)
        # Mild photometrics here: the warp must be the main difference between a positive and its negative.
        v1, v2 = photometric(apply_global(x, t1), False), photometric(apply_global(x, t2), False)
        n1, n2 = photometric(apply_global(local_warp(x), t1), False), photometric(apply_global(local_warp(x), t2), False)
        p = F.normalize(self.predictor(self.online(standardize(torch.cat([v1, v2])))).float(), dim=1)
        with torch.no_grad():
            z = F.normalize(self.target(standardize(torch.cat([v2, v1, n2, n1]))).float(), dim=1)
        pos, neg = z[:2 * n], z[2 * n:]
        logits = torch.stack([(p * pos).sum(1), (p * neg).sum(1)], 1) / tau
        loss = F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long, device=x.device))
        acc = (logits[:, 0] > logits[:, 1]).float().mean()
        return loss, acc


def cmd_ssl(a, ds):
    seed_all(a.seed)
    net = build(a.arch, a.width)
    model = ContraWarping(net.features, net.dim).to(DEV)
    pool = np.concatenate([ds.indices("train", False), ds.indices("val", False)])  # labels ignored; never test
    if a.limit:
        pool = pool[:a.limit]
    steps = a.steps or max(1, a.epochs * len(pool) // a.bs)
    make_opt = lambda m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=a.lr, weight_decay=1e-4)

    def train_step(m, o, idx):
        with autocast(a.bf16):
            loss, acc = m.loss(ds.batch(idx, DEV))
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
        return loss, acc
    rng = np.random.default_rng(a.seed)
    tag, start = f"ssl_{a.arch}", 0
    st = load_ckpt(a, tag, rng)
    if st is not None:
        steps = st.get("steps", steps)  # a --budget run keeps the schedule it fitted
    elif a.budget:
        model.train()
        per = probe_step_time(model, make_opt, train_step, lambda r: r.choice(pool, a.bs, replace=False))
        fit = max(1, int(a.budget / per))
        if fit < steps:
            print(f"ssl[{a.arch}]: --budget {a.budget:.0f} s at {per * 1e3:.1f} ms/step: {fit} steps instead of "
                  f"{steps}", flush=True)
            steps = fit
    opt = make_opt(model)
    sched = one_cycle(opt, a.lr, steps, 0.1)
    if st is not None:
        model.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        start = st["step"]
    bar = tqdm(range(start, steps), desc=f"ssl[{a.arch}]", mininterval=5, initial=start, total=steps)
    model.train()
    for step in bar:
        if step > start and step % 25 == 0:
            save_ckpt(a, tag, rng, model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), step=step,
                      steps=steps)
        loss, acc = train_step(model, opt, rng.choice(pool, a.bs, replace=False))
        sched.step()
        model.update_target(1 - (1 - 0.99) * (math.cos(math.pi * step / steps) + 1) / 2)
        if step % 25 == 0:  # reading the loss waits for the GPU: not every step
            bar.set_postfix(loss=f"{loss.item():.3f}", pos_gt_neg=f"{acc.item():.2f}")
    save_ckpt(a, tag, rng, model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), step=steps,
              steps=steps)
    save({"features": net.features.state_dict(), "arch": a.arch, "width": net.width, "steps": steps, "images": len(pool)},
         os.path.join(a.work, f"ssl_{a.arch}.pt"))
    print(f"ssl[{a.arch}]: {steps} steps of {a.bs} on {len(pool)} unlabelled faces -> {a.work}/ssl_{a.arch}.pt")


# ----------------------------------------------------------------------------------------------- supervised
def probe_step_time(model, make_opt, train_step, draw, n=14, warm=4):
    """Seconds per training step of `model`, timed on a throwaway copy (the model itself is not touched): how
    `--budget` turns a time limit into a schedule that still ends with its learning rate annealed."""
    m = copy.deepcopy(model)
    o = make_opt(m)
    r = np.random.default_rng(12345)
    for i in range(n):
        if i == warm:
            if DEV == "cuda":
                torch.cuda.synchronize()
            t = time.time()
        train_step(m, o, draw(r))
    if DEV == "cuda":
        torch.cuda.synchronize()
    del m, o
    return (time.time() - t) / (n - warm)


class Ensemble(nn.Module):
    """Several teachers read as one: the mean of their class probabilities at temperature T, returned as
    log-probabilities (so softmax(Ensemble(x) / 1) is that mean at T = 1; use `probs` for other temperatures)."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def probs(self, x, T=1.0):
        return torch.stack([F.softmax(n(x).float() / T, 1) for n in self.nets]).mean(0)

    def forward(self, x):
        return torch.log(self.probs(x).clamp_min(1e-8))


def mixup(x, y, frac):
    """Function matching (Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", 2022):
    a share `frac` of the batch is replaced by blends of two faces, lam * a + (1 - lam) * b with lam uniform in
    [0, 1] per face, their vote labels blended alike. Teacher and student read the same blend, so the distillation
    loss matches the teacher's function between faces as well as on them. No host sync (masks, not indexing)."""
    n = x.shape[0]
    lam = torch.rand(n, device=x.device)
    lam = torch.where(torch.rand(n, device=x.device) < frac, lam, torch.ones_like(lam))
    perm = torch.randperm(n, device=x.device)
    x = torch.lerp(x[perm], x, lam.view(n, 1, 1, 1))
    y = torch.lerp(y[perm], y, lam.view(n, 1))
    return x, y


def class_weights(prior, balance):
    """Class weights prior^-balance, normalised to mean 1 under the prior (float32)."""
    w = np.power(np.maximum(prior, 1e-4), -balance)
    return (w / (prior * w).sum()).astype(np.float32)


def label_kd_loss(out, y, w, tp=None, T=3.0, kd=0.7):
    """Class-weighted soft-label cross-entropy; with `tp` (teacher probabilities at temperature T), blended with
    distillation at weight kd."""
    loss = -(w * y * F.log_softmax(out, 1)).sum(1).mean()
    if tp is not None:
        loss = (1 - kd) * loss + kd * T * T * F.kl_div(F.log_softmax(out / T, 1), tp, reduction="batchmean")
    return loss


def teacher_probs(teacher, x, T):
    """The teacher's (a net's or an `Ensemble`'s) class probabilities at temperature T on standardized faces."""
    with torch.no_grad():
        return teacher.probs(x, T) if isinstance(teacher, Ensemble) else F.softmax(teacher(x).float() / T, 1)


class ViewBank:
    """`--bank K`: K augmented views of every training face, drawn once, with the teacher's probabilities on each,
    kept on the training device. Each step then reads one stored view per face instead of drawing a fresh one
    and running the teacher on it, so the teacher's forward passes (four or five nets for an ensemble) are paid
    once, K passes over the faces, rather than once per step of a 200-epoch schedule. The views are those `augment`
    draws, stored as fp16 (2.3 MB per 500 faces and view).

    With `keep` (a folder: `--resume` gives WORK/ckpt/bank) each view is also written there once drawn, and a
    view already there is read instead of drawn again, so on a CPU, where an ensemble's bank takes hours, an
    interrupted run does not pay for it twice. `key` says what the views were drawn for (faces, teachers,
    temperature, seed); a view kept for another key is refused rather than mixed in."""

    @torch.no_grad()
    def __init__(self, ds, idx, teacher, k, T, keep=None, key="", bf16=False):
        n, bs = len(idx), 4096 if DEV == "cuda" else 512  # larger batches than training's: forward passes only
        self.k = k
        self.views = torch.empty((n, k, 1, SIZE, SIZE), dtype=torch.float16, device=DEV)
        self.probs = torch.empty((n, k, len(EMOTIONS)), dtype=torch.float32, device=DEV)
        row = np.full(len(ds.images), -1, np.int64)
        row[idx] = np.arange(n)
        self.row = torch.from_numpy(row).to(DEV)
        t, kept = time.time(), 0
        if keep:
            os.makedirs(keep, exist_ok=True)
        for j in tqdm(range(k), desc=f"view bank ({n} faces x {k})", mininterval=5):
            path = keep and os.path.join(keep, f"view{j:03d}.pt")
            if path and os.path.exists(path):
                st = torch.load(path, map_location=DEV)
                if st["key"] != key:
                    sys.exit(f"{path} was drawn for {st['key']}, not for {key}: remove {keep} (or give another --work)")
                self.views[:, j], self.probs[:, j] = st["views"], st["probs"]
                kept += 1
                continue
            for s in range(0, n, bs):
                x = augment(ds.batch(idx[s:s + bs], DEV))
                self.views[s:s + bs, j] = x.half()
                with autocast(bf16):
                    self.probs[s:s + bs, j] = teacher_probs(teacher, standardize(x), T)
            if path:
                save({"key": key, "views": self.views[:, j].clone(), "probs": self.probs[:, j].clone()}, path)
        print(f"view bank: {k} views of {n} faces and the teacher's probabilities on them in {time.time() - t:.0f} s"
              + (f" ({kept} read back from {keep})" if kept else ""), flush=True)

    def draw(self, idx):
        """One stored view of each face `idx` (rows of the data set), and the teacher's probabilities on it."""
        r = self.row[FerPlus.rows_on(idx, DEV)]
        j = torch.randint(self.k, r.shape, device=DEV)
        return self.views[r, j].float(), self.probs[r, j]


def supervised_step(a, ds, train_idx, teacher=None):
    """One training step's function (model, optimizer, batch indices) -> loss: soft-label (vote) cross-entropy with
    class weights, plus distillation from `teacher` (a net or an `Ensemble`) when given (on fresh views, or on
    stored ones with --bank)."""
    T = 3.0
    # Class weights prior^-balance (normalised to mean 1 under the prior): rare classes (disgust, contempt) get more
    # gradient than their share of FER+; the logit adjustment at export only shifts decisions, this shapes features.
    w = torch.from_numpy(class_weights(ds.soft(train_idx).mean(0), a.balance)).to(DEV)
    bank = None
    if a.bank and teacher is not None:
        key = f"{len(train_idx)} faces from {train_idx[0]}, teachers {a.teachers or 'teacher.pt'}, T {T}, seed {a.seed}"
        key += ", bf16" if a.bf16 else ""  # (not there before --bf16: banks kept by earlier runs still match)
        bank = ViewBank(ds, train_idx, teacher, a.bank, T, os.path.join(a.work, "ckpt", "bank") if a.resume else None,
                        key, a.bf16)

    def train_step(m, o, idx):
        y = ds.soft_on(idx, DEV)
        if bank is not None:
            x, tp = bank.draw(idx)
            clean = standardize(x)
        else:
            x = augment(ds.batch(idx, DEV))
            if a.mixup:
                x, y = mixup(x, y, a.mixup)
            clean = standardize(x)
            with autocast(a.bf16):
                tp = None if teacher is None else teacher_probs(teacher, clean, T)
        # --camera: the student reads a share of the faces through a line camera's effects, the teacher the same
        # face without them, so the student learns to say on a blurred, shadowed or badly exposed face what the
        # teacher says on the clean one.
        inp = standardize(camera_effects(x, a.camera)) if a.camera else clean
        with autocast(a.bf16):
            out = m(inp)
        loss = label_kd_loss(out.float(), y, w, tp, T)
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()
        return loss
    return train_step


def train_epoch(net, opt, sched, train_step, perm, bs, desc):
    """One pass over `perm` (shuffled train indices) in batches of `bs`, the schedule stepped after each batch."""
    net.train()
    bar = tqdm(range(max(1, len(perm) // bs)), desc=desc, mininterval=5)
    for s in bar:
        loss = train_step(net, opt, perm[s * bs:(s + 1) * bs])
        sched.step()
        if s % 50 == 0:  # reading the loss waits for the GPU: not every step
            bar.set_postfix(loss=f"{loss.item():.3f}")


def better(m, best):
    """Model selection on val: accuracy + macro-F1 (rare classes count as much as common ones)."""
    return best is None or m["accuracy"] + m["macro_f1"] > best["accuracy"] + best["macro_f1"]


def refit(a, tag, opt, sched, done, epochs, wanted, steps_per, per_epoch, t_begin):
    """--budget, re-read from the epochs themselves: the probe times a few steps before training starts, and
    where several runs share one GPU and start together it reads the GPU idle (round four's probes under-read by
    2x, models/README.md). After each epoch the schedule is fitted again to the time left at the last epoch's
    pace, at most the epochs asked for, and the one-cycle schedule is rebuilt for the new length and moved on to
    where training is. Small changes (under 5%) and the last fifth of the schedule are left alone, so the
    learning rate is not nudged at every epoch or late in its decay. Returns (epochs, sched)."""
    left = a.budget - (time.time() - t_begin)
    fit = min(wanted, done + max(1, int(left / per_epoch)))
    if fit == epochs or abs(fit - epochs) < max(2, 0.05 * epochs) or done >= 0.8 * epochs:
        return epochs, sched
    print(f"{tag}: --budget {a.budget:.0f} s at {per_epoch:.1f} s/epoch: {fit} epochs instead of {epochs}",
          flush=True)
    new = one_cycle(opt, a.lr, fit * steps_per, 0.15)
    with warnings.catch_warnings():  # stepping a scheduler before the optimizer warns; nothing is trained here
        warnings.simplefilter("ignore")
        for _ in range(done * steps_per):
            new.step()
    return fit, new


def train_supervised(a, ds, net, train_idx, teacher=None, tag="", epochs=None, start=None):
    """Soft-label (vote) cross-entropy, optionally plus distillation from a teacher (a net or an `Ensemble`);
    best epoch chosen on val. `start`, the val metrics of a net that is already trained (`--init`), makes the
    starting weights epoch 0 of that choice, so training on never hands back a net worse on val than it began."""
    net = net.to(DEV)
    epochs = epochs or a.epochs
    steps_per = max(1, len(train_idx) // a.bs)
    make_opt = lambda m: torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=5e-4)
    rng = np.random.default_rng(a.seed)
    best, best_state, first = None, None, 0
    if start is not None:
        best, best_state = start, copy.deepcopy(net.state_dict())
    t_begin = time.time()
    st = load_ckpt(a, tag, rng)
    train_step = supervised_step(a, ds, train_idx, teacher)
    wanted = epochs
    if st is not None:
        epochs = st.get("epochs", epochs)  # a --budget run keeps the schedule it fitted
    elif a.budget:
        net.train()
        per = probe_step_time(net, make_opt, train_step, lambda r: r.choice(train_idx, a.bs, replace=False))
        val_s = 0.05 * per * steps_per  # the val pass per epoch, roughly
        fit = max(1, int((a.budget - (time.time() - t_begin)) / (per * steps_per + val_s)))  # a bank's time is spent
        if fit < epochs:
            print(f"{tag}: --budget {a.budget:.0f} s at {per * 1e3:.1f} ms/step: {fit} epochs instead of {epochs}",
                  flush=True)
            epochs = fit
    opt = make_opt(net)
    sched = one_cycle(opt, a.lr, epochs * steps_per, 0.15)
    if st is not None:
        net.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        best, best_state, first = st["best"], st["best_state"], st["epoch"]
    ep = first
    while ep < epochs:  # not a range: --budget may re-fit `epochs` on the way
        t_ep = time.time()
        train_epoch(net, opt, sched, train_step, rng.permutation(train_idx), a.bs, f"{tag} ep{ep + 1}/{epochs}")
        m = val_metrics(a, net, ds)
        print(f"{tag} epoch {ep + 1}: val {fmt(m)}", flush=True)
        if a.budget and st is None:
            epochs, sched = refit(a, tag, opt, sched, ep + 1, epochs, wanted, steps_per, time.time() - t_ep, t_begin)
        if better(m, best):
            best, best_state = m, copy.deepcopy(net.state_dict())
        save_ckpt(a, tag, rng, model=net.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                  best=best, best_state=best_state, epoch=ep + 1, epochs=epochs)
        ep += 1
    if start is not None and best == start:
        print(f"{tag}: no epoch beat the starting weights on val; they are kept", flush=True)
    net.load_state_dict(best_state)
    return net, best


def load_ssl(a, net, arch):
    path = os.path.join(a.work, f"ssl_{arch}.pt")
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: run `ssl --arch {arch}` with this --work first, or give --scratch")
    st = torch.load(path, map_location="cpu")
    if width_of(st, arch) != net.width:
        sys.exit(f"{path} holds a width-{width_of(st, arch)} {arch} encoder, not width {net.width}: run "
                 f"`ssl --arch {arch} --width {net.width}` first, or give --scratch")
    net.features.load_state_dict(st["features"])
    print(f"encoder initialised from {path}")
    return net


def initial(a, arch):
    """A fresh `arch` net at --width, its encoder from the ContraWarping run unless --scratch."""
    net = build(arch, a.width)
    return net if a.scratch else load_ssl(a, net, arch)


def cmd_teacher(a, ds):
    seed_all(a.seed)
    net = initial(a, "teacher")
    idx = ds.soft_indices("train")[:a.limit or None]
    net, best = train_supervised(a, ds, net, idx, tag="teacher")
    save({"model": net.state_dict(), "width": net.width, "val": best, "ssl": not a.scratch, "seed": a.seed,
          "bf16": a.bf16},
         os.path.join(a.work, "teacher.pt"))
    print(f"teacher: best val {fmt(best)}")


def net_from(st, arch):
    """The `arch` net a loaded checkpoint holds."""
    net = build(arch, width_of(st, arch))
    net.load_state_dict(st["model"])
    return net


def load_net(path, arch):
    return net_from(torch.load(path, map_location="cpu"), arch)


def teacher_nets(a):
    """The teachers named by --teachers (comma-separated), else WORK/teacher.pt: (path, net in eval mode) pairs."""
    paths = a.teachers.split(",") if a.teachers else [os.path.join(a.work, "teacher.pt")]
    for p in paths:
        if not os.path.isfile(p):
            sys.exit(f"teacher checkpoint {p} not found: train one (`teacher`), or rebuild the shipped teacher from "
                     f"its ONNX file: python {os.path.relpath(os.path.join(HERE, 'gpu', 'from_onnx.py'))} teacher "
                     f"{os.path.relpath(os.path.join(HERE, '..', 'mien_teacher_fp32.onnx'))} {p}")
    return [(p, load_net(p, "teacher").to(DEV).eval()) for p in paths]


def report_teachers(members, ds, splits):
    """Each teacher and, if there are several, their ensemble, on `splits` (PyTorch, no logit adjustment)."""
    rows = [(f"{os.path.relpath(p)} (width {n.width})", n) for p, n in members]
    if len(members) > 1:
        rows.append((f"ensemble of {len(members)} (mean probability)", Ensemble([n for _, n in members]).eval()))
    for name, net in rows:
        for split in splits:
            print(f"{name}: {split} {fmt(evaluate(net, ds, split))}", flush=True)


def load_teacher(a, ds):
    """WORK/teacher.pt, or the ensemble of the files given with --teachers (its members and itself reported on
    val, except in a smoke run, where those passes would cost more than its training)."""
    members = teacher_nets(a)
    if len(members) == 1:
        return members[0][1]
    if not a.limit:
        report_teachers(members, ds, ["val"])
    return Ensemble([n for _, n in members]).eval()


@torch.no_grad()
def unfold_bn(net, ds, idx, bs=256):
    """Undo the export's BatchNorm folding so a net rebuilt by gpu/from_onnx.py (each BatchNorm the identity plus
    the folded bias) can train on: training normalizes by batch statistics, which the identity ignores. Each
    convolution's weight is rescaled by 1/s to its initial per-channel norm, and the BatchNorm after it is set from
    the convolution's output statistics on `idx` (un-augmented; mean m, variance v of the rescaled output) to gamma
    = s * sqrt(v + eps), beta = bias + s * m, running mean m and variance v. In eval mode the net then computes
    exactly what it did, so no layer's input changes and one pass measures every layer; in training, batch
    statistics near m and v give nearly the same."""
    net.eval()
    pairs = conv_bn_pairs(net)
    sums = {c: [0.0, 0.0, 0] for c, _ in pairs}  # per channel: sum, sum of squares, count (float64)

    def hook(conv, inp, out):
        o = out.double().transpose(0, 1).flatten(1)
        acc = sums[conv]
        acc[0], acc[1], acc[2] = acc[0] + o.sum(1), acc[1] + (o * o).sum(1), acc[2] + o.shape[1]
    hs = [c.register_forward_hook(hook) for c, _ in pairs]
    x = standardize(ds.batch(idx[:bs], DEV))
    before = net(x)  # the first batch's logits, to check the result against
    for i in range(bs, len(idx), bs):
        net(standardize(ds.batch(idx[i:i + bs], DEV)))
    for h in hs:
        h.remove()
    for conv, bn in pairs:
        s = conv.weight.flatten(1).norm(dim=1) / math.sqrt(2.0)  # He init: std sqrt(2 / fan_in), norm ~ sqrt(2)
        s = torch.where(s > 0, s, torch.ones_like(s))  # a dead (all-zero) channel stays as it is
        s1, s2, n = sums[conv]
        m = s1 / n
        v = (s2 / n - m * m).clamp_min(0)
        m, v = (m / s).float(), (v / (s * s)).float()  # statistics of the rescaled output
        conv.weight /= s.view(-1, 1, 1, 1)
        bn.running_mean.copy_(m), bn.running_var.copy_(v)
        bn.bias.copy_(bn.bias + s * m)
        bn.weight.copy_(s * torch.sqrt(v + bn.eps))
    err = float((net(x) - before).abs().max())
    if err > 1e-3 * max(1.0, float(before.abs().max())):
        sys.exit(f"unfolding BatchNorm changed the net's logits by up to {err:.2e}")
    net.train()
    batch = float((net(x) - before).abs().max())
    net.eval()
    print(f"BatchNorm unfolded: eval logits within {err:.1e}, train-mode (batch statistics) within {batch:.2f}")


def cmd_student(a, ds):
    seed_all(a.seed)
    teacher = load_teacher(a, ds)
    if a.init:  # train on from an exported student (ONNX, e.g. the shipped one) or a student checkpoint
        if a.init.endswith(".onnx"):
            sys.path.insert(0, os.path.join(HERE, "gpu"))
            from from_onnx import check, rebuild
            net, folded = rebuild("student", a.init), True
            check(net, a.init)
        else:
            st = torch.load(a.init, map_location="cpu")
            net, folded = net_from(st, "student"), bool(st.get("from_onnx"))
        net = net.to(DEV)
        if folded:
            unfold_bn(net, ds, np.random.default_rng(a.seed).permutation(ds.indices("train", False))[:8192])
        start = val_metrics(a, net, ds)
        print(f"student initialised from {a.init}: val {fmt(start)}", flush=True)
    else:
        net, start = initial(a, "student"), None
    idx = ds.soft_indices("train")[:a.limit or None]
    net, best = train_supervised(a, ds, net, idx, teacher=teacher, tag="student", start=start)
    save({"model": net.state_dict(), "width": net.width, "val": best, "ssl": not a.scratch and not a.init,
          "init": a.init, "mixup": a.mixup, "camera": a.camera, "bank": a.bank, "seed": a.seed,
          "teachers": a.teachers or "teacher.pt", "bf16": a.bf16},
         os.path.join(a.work, "student.pt"))
    print(f"student: best val {fmt(best)}")


@torch.no_grad()
def recompute_bn(net, ds, idx, bs=256):
    """BatchNorm running statistics recomputed from scratch (a plain average over `idx`, un-augmented as the
    firmware sees faces): an average of weights is a new network whose activations the old statistics do not fit."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for i in range(0, len(idx), bs):
        net(standardize(ds.batch(idx[i:i + bs], DEV)))
    for m, mo in zip(bns, saved):
        m.momentum = mo
    net.eval()


# The val accuracy an average must gain to replace the student: 16 of FER+ val's 3,199 faces. The best of several
# averages is a maximum of noisy readings (a polish of the shipped student read 0.8481-0.8512 against its 0.8493,
# models/README.md "Round three"), so a smaller gain is not evidence.
POLISH_MARGIN = 0.005


def cmd_polish(a, ds):
    """Stochastic weight averaging after distillation: WORK/student.pt trains on for --epochs short cycles (cosine
    from --lr down to --lr/20 within each epoch, the same loss and teacher(s) as `student`); the weights at the end
    of each cycle are averaged and the average's BatchNorm statistics recomputed. The average with the best val
    (accuracy + macro-F1) replaces WORK/student.pt only if it beats the student it started from by POLISH_MARGIN
    accuracy without losing macro-F1 (the old file is kept as student_unpolished.pt)."""
    seed_all(a.seed)
    src = os.path.join(a.work, "student.pt")
    start = torch.load(src, map_location="cpu")
    teacher = load_teacher(a, ds)
    net = load_net(src, "student").to(DEV)
    idx = ds.soft_indices("train")[:a.limit or None]
    bn_idx = np.random.default_rng(a.seed).permutation(idx)[:8192]
    base = evaluate(net, ds, "val")
    print(f"polish: start val {fmt(base)}", flush=True)
    steps_per = max(1, len(idx) // a.bs)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=5e-4)
    cycle = lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (s % steps_per) / steps_per))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cycle)
    avg = torch.optim.swa_utils.AveragedModel(net)
    train_step = supervised_step(a, ds, idx, teacher)
    rng = np.random.default_rng(a.seed)
    best, best_state, first = None, None, 0
    st = load_ckpt(a, "polish", rng)
    if st is not None:
        net.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        avg.load_state_dict(st["avg"])
        best, best_state, first = st["best"], st["best_state"], st["epoch"]
    for ep in range(first, a.epochs):
        train_epoch(net, opt, sched, train_step, rng.permutation(idx), a.bs, f"polish ep{ep + 1}/{a.epochs}")
        avg.update_parameters(net)
        model = copy.deepcopy(avg.module)
        recompute_bn(model, ds, bn_idx)
        m, last = evaluate(model, ds, "val"), evaluate(net, ds, "val")
        print(f"polish epoch {ep + 1}: average of {ep + 1} val {fmt(m)} | last weights val {fmt(last)}", flush=True)
        if better(m, best):
            best, best_state = {**m, "averaged": ep + 1}, copy.deepcopy(model.state_dict())
        save_ckpt(a, "polish", rng, model=net.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                  avg=avg.state_dict(), best=best, best_state=best_state, epoch=ep + 1)
    if best["accuracy"] < base["accuracy"] + POLISH_MARGIN or best["macro_f1"] < base["macro_f1"]:
        print(f"polish: no average beat the start on val by {POLISH_MARGIN:.3f} accuracy without losing macro-F1 "
              f"(best: average of {best['averaged']}, {fmt(best)}); {src} unchanged")
        return
    if not os.path.exists(os.path.join(a.work, "student_unpolished.pt")):
        os.replace(src, os.path.join(a.work, "student_unpolished.pt"))
    save({**start, "model": best_state, "val": best, "polish": {"epochs": a.epochs, "lr": a.lr,
                                                                 "averaged": best["averaged"], "start_val": base}},
         src)
    print(f"polish: average of {best['averaged']} cycles, val {fmt(base)} -> {fmt(best)}; written to {src}")


def cmd_teachers(a, ds):
    """Each teacher of --teachers and their ensemble on val and, where the data has them, test: does the ensemble
    measurably beat its members?"""
    report_teachers(teacher_nets(a), ds, ["val"] + (["test"] if len(ds.indices("test")) else []))


def cmd_ablation(a, ds):
    """The seed paper's claim: SSL-pretrained students need fewer labels than students trained from scratch."""
    try:
        fractions = [float(f) for f in a.fractions.split(",")]
    except ValueError:
        fractions = []
    if not fractions or not all(0 < f <= 1 for f in fractions):
        sys.exit(f"--fractions {a.fractions!r}: give comma-separated fractions in (0, 1], e.g. 0.01,0.1")
    rows = []
    full = ds.soft_indices("train")
    for frac in fractions:
        rng = np.random.default_rng(a.seed)
        idx = np.sort(rng.choice(full, max(a.bs, int(len(full) * frac)), replace=False))
        epochs = {0.01: 30, 0.1: 12, 1.0: a.epochs}.get(frac, a.epochs) if not a.limit else 1
        for init in ("ssl", "scratch"):
            seed_all(a.seed)
            net = build("student", a.width)
            if init == "ssl":
                net = load_ssl(a, net, "student")
            net, best = train_supervised(a, ds, net, idx, tag=f"ablation {init} {frac:.0%}", epochs=epochs)
            # A copy of the data without its test rows (as sent to a lent GPU) trains only; `--resume` on the full
            # data later reloads each finished run from its checkpoint and reports test.
            test = evaluate(net, ds, "test") if len(ds.indices("test")) else None
            rows.append({"labels": frac, "n": len(idx), "init": init, "val": best, "test": test})
            print(f"ablation {init} {frac:.0%}: test {fmt(test) if test else 'not in this data'}", flush=True)
    if any(r["test"] is None for r in rows):
        return
    with open(os.path.join(a.work, "ablation.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("| labels | images | init | val acc | val macro-F1 | test acc | test macro-F1 |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['labels']:.0%} | {r['n']} | {r['init']} | {r['val']['accuracy']:.4f} | {r['val']['macro_f1']:.4f} "
              f"| {r['test']['accuracy']:.4f} | {r['test']['macro_f1']:.4f} |")


# ----------------------------------------------------------------------------------------------- export
def fused(net):
    """Eval-mode copy with every BatchNorm folded into the convolution before it."""
    net = copy.deepcopy(net).cpu().eval()
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def walk(mod):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Sequential) and len(child) >= 2 and isinstance(child[0], nn.Conv2d) and isinstance(child[1], nn.BatchNorm2d):
                layers = [fuse_conv_bn_eval(child[0], child[1])] + list(child[2:])
                setattr(mod, name, nn.Sequential(*layers))
            else:
                walk(child)
    walk(net)
    return net


def choose_bias(net, ds):
    """Post-hoc logit adjustment b = -t*log(prior), t picked on val for macro-F1 while accuracy stays within
    0.5 point: rare classes (disgust, contempt, fear) get a fair chance. Folded into the head's bias."""
    idx = ds.indices("val")
    lg = logits_of(net, ds, idx)
    prior = np.maximum(ds.soft(ds.soft_indices("train")).mean(0), 1e-4)
    base = metrics(lg.argmax(1), ds.label[idx])
    best_t, best = 0.0, base
    for t in np.arange(0.05, 1.01, 0.05):
        m = metrics((lg - t * np.log(prior)).argmax(1), ds.label[idx])
        if m["accuracy"] >= base["accuracy"] - 0.005 and m["macro_f1"] > best["macro_f1"]:
            best_t, best = float(t), m
    print(f"logit adjustment t={best_t:.2f}: val {fmt(base)} -> {fmt(best)}")
    return (-best_t * np.log(prior)).astype(np.float32), best_t


def export_onnx(net, path, size=48):
    net = net.cpu().eval()
    x = torch.zeros(1, 1, size, size)
    torch.onnx.export(net, x, path, input_names=["face"], output_names=["logits"], opset_version=13,
                      dynamo=False, do_constant_folding=True)
    import onnx
    m = onnx.load(path)
    meta = {"mien.input": f"1x1x{size}x{size} grey, per-image standardized (x-mean)/(std+1e-3), x in [0,1]",
            "mien.labels": ",".join(EMOTIONS), "mien.recipe": "models/expression/recipe.py"}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name, m.producer_version = "mien-recipe", "1"
    onnx.save(m, path)


class Calib:
    def __init__(self, ds, idx):
        self.batches = iter([{"face": standardize(ds.batch(idx[i:i + 1])).numpy()} for i in range(len(idx))])

    def get_next(self):
        return next(self.batches, None)


F32_MAX_CIN = 32  # convolutions with at most this many input channels stay f32: see quantize()


def quantize(fp32, int8, ds, n=512, seed=0, f32_max_cin=F32_MAX_CIN, keep_f32=()):
    """Static QOperator quantization with standard ops only (QLinearConv, QLinearMatMul): tract runs these as int8.
    Calibrated on train images (never val/test).

    Two choices, both measured in tract (`op_profile`, `cargo bench --bench expression`; models/README.md):
    - "Relu" is quantized too, which lets onnxruntime fold each ReLU into the QLinearConv before it (the output
      range starts at 0). Otherwise every layer dequantizes to f32, applies ReLU and quantizes again.
    - Convolutions with at most `f32_max_cin` input channels stay f32 (the shipped student's first four). The
      first (1 input channel, k=9) is a 16x9 by 9x2304 product, too thin for int8 kernels (on an AMX x86 it took
      0.55-0.75 ms alone, 6x its f32 time). In the next three, tract's int8 im2col (one row per input channel x
      tap x output line, each row a few bytes) costs more than the int8 product saves. Measured on the round-one
      student (`cargo bench --bench expression -- --model FILE ...`, models/README.md): with 1 to 6 convolutions
      in f32, val accuracy 0.8324, 0.8331, 0.8334, 0.8346, 0.8343, 0.8334; 4 was the fastest of 1-4 and the best
      on val.
    `keep_f32` names further Conv nodes to leave in f32 (`quantize --keep-f32`), for measuring a layout: keeping
    features.4 too was 2-3% faster than the shipped file on one EPYC and still slower than fp32 (models/README.md)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    graph = onnx.load(fp32).graph
    weights = {t.name: t.dims for t in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    names = [node.name for node in convs]
    first = [node.name for node in convs if weights[node.input[1]][1] <= f32_max_cin]
    unknown = [name for name in keep_f32 if name not in names]
    if unknown:
        sys.exit(f"quantize: --keep-f32 {','.join(unknown)}: no such Conv node in {fp32} "
                 f"(its Conv nodes: {', '.join(names)})")
    first += [name for name in keep_f32 if name not in first]
    pre = int8 + ".pre.onnx"
    quant_pre_process(fp32, pre, skip_optimization=True)
    idx = np.random.default_rng(seed).choice(ds.indices("train", False), n, replace=False)
    quantize_static(pre, int8, Calib(ds, idx), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["Conv", "Relu", "MatMul"], nodes_to_exclude=first,
                    per_channel=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99})
    os.remove(pre)


def ort_session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def ort_run(session, faces):
    """onnxruntime's logits for model-ready faces (N, 1, S, S), one at a time, as the firmware runs them."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: faces[i:i + 1].numpy()})[0] for i in range(len(faces))])


def ort_logits(path, ds, idx):
    """onnxruntime's logits for the FER+ faces `idx`, standardized per image."""
    return ort_run(ort_session(path), standardize(ds.batch(idx)))


def ort_eval(path, ds, split):
    idx = ds.indices(split)
    return metrics(ort_logits(path, ds, idx).argmax(1), ds.label[idx])


def cmd_export(a, ds):
    out = a.out
    os.makedirs(out, exist_ok=True)
    report = {}
    for name, arch, ck in (("student", "student", "student.pt"), ("teacher", "teacher", "teacher.pt")):
        if name == "teacher" and not os.path.exists(os.path.join(a.work, ck)):
            # a student trained elsewhere (a lease's arm, an ensemble's student): its teacher is not one net here
            print(f"export: no {ck} in {a.work}: the student alone is exported", flush=True)
            continue
        net = fused(load_net(os.path.join(a.work, ck), arch))
        bias, t = choose_bias(net, ds)
        with torch.no_grad():
            net.head.bias += torch.from_numpy(bias)
        fp32 = os.path.join(out, f"mien_{name}_fp32.onnx")
        export_onnx(net, fp32)
        report[name] = {"params": sum(p.numel() for p in net.parameters()), "macs": macs(net), "logit_t": t,
                        "val_torch": evaluate(net, ds, "val")}
        if name == "student":
            int8 = os.path.join(out, "mien_student_int8.onnx")
            quantize(fp32, int8, ds)
            report[name]["val_int8_ort"] = ort_eval(int8, ds, "val")
        report[name]["val_fp32_ort"] = ort_eval(fp32, ds, "val")
    update_sums(out, [os.path.join(out, f"mien_{n}.onnx") for n in ("student_int8", "student_fp32", "teacher_fp32")
                      if n.split("_")[0] in report])
    write_ort_reference(out, ds)
    for k, v in report.items():
        print(k, {kk: (fmt(vv) if isinstance(vv, dict) else vv) for kk, vv in v.items()})
    with open(os.path.join(a.work, "export.json"), "w") as f:
        json.dump(report, f, indent=1)


def write_ort_reference(out, ds, n=64):
    """onnxruntime's logits for the first `n` FER+ val faces through each shipped student, with the file's SHA-256:
    `tests/eval.rs` runs the same faces through tract and requires the same answers (tract must execute what
    onnxruntime executes). Only image indices and logits are stored, never pixels."""
    import hashlib
    import onnxruntime as ort
    if os.path.abspath(out) != os.path.abspath(os.path.join(HERE, "..")):
        return  # a scratch export (smoke run): the reference belongs to the repository's models only
    idx = [int(i) for i in ds.indices("val")[:n]]
    ref = {"faces": "FER+ image indices (row of labels.csv), val split", "index": idx, "models": {}}
    for name in ("mien_student_int8.onnx", "mien_student_fp32.onnx"):
        path = os.path.join(out, name)
        logits = ort_logits(path, ds, idx)
        ref["models"][name] = {"sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
                               "onnxruntime": ort.__version__,
                               "logits": [[round(float(v), 6) for v in row] for row in logits]}
    dst = os.path.join(HERE, "..", "..", "tests", "golden", "student_onnxruntime.json")
    with open(dst, "w") as f:
        json.dump(ref, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"onnxruntime reference logits for {len(idx)} val faces: {os.path.relpath(dst)}")


def cmd_quantize(a, ds):
    """Re-quantize the exported fp32 student (OUT/mien_student_fp32.onnx) without training: for a change to the
    quantization itself."""
    fp32, int8 = os.path.join(a.out, "mien_student_fp32.onnx"), os.path.join(a.out, "mien_student_int8.onnx")
    quantize(fp32, int8, ds, keep_f32=[n for n in a.keep_f32.split(",") if n])
    update_sums(a.out, [int8])
    print("int8 student, val (onnxruntime):", fmt(ort_eval(int8, ds, "val")))
    write_ort_reference(a.out, ds)


def update_sums(out, files):
    """Refresh these files' lines in SHA256SUMS (the firmware refuses a model whose hash is not listed)."""
    import hashlib
    path = os.path.join(out, "SHA256SUMS")
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    names = {os.path.basename(f) for f in files}
    lines = [l for l in lines if l.split()[-1].lstrip("*") not in names]
    for f in files:
        lines.append(f"{hashlib.sha256(open(f, 'rb').read()).hexdigest()}  {os.path.basename(f)}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


# The full schedule's time per training stage on this project's 2-core CPU, in minutes (SSL teacher, teacher, SSL
# student, student): `all` without --hours runs it, and --split with these numbers keeps its proportions.
FULL_SCHEDULE = (186, 120, 60, 109)
# `all --hours`'s default shares: the teacher first and no SSL student, measured against FULL_SCHEDULE's proportions
# in one sitting of 1.75 h: int8 val 0.8256 / 0.6989 (seed 0) and 0.8209 / 0.6932 (seed 1) against 0.8128 / 0.6706
# and 0.8140 / 0.6563 (models/README.md, "One sitting, the teacher first"). Its SSL teacher's share given to the
# teacher (0, 70, 0, 30) gave a better teacher but not a better student: 0.8212 / 0.6916 (seed 0); 15% more of
# it to the student (0, 55, 0, 45): 0.8278 / 0.6964 (seed 0), inside one seed's spread, so the default stays.
# With --bf16 (Zen 4, avx512_bf16) the same 1.75 h fits the teacher's 40 epochs and 56 student epochs: 0.8374 / 0.7164
# (seed 0; models/README.md, "One sitting in bf16"), so --bf16 is the advice where the CPU has it.
SITTING = (25, 45, 0, 30)


def sitting(hours=0, split=None):
    """`all`'s stages in order, as (step, options). Without hours, the full schedule, every stage. With hours,
    each training stage's --budget is its share of them, SITTING's or `split`'s (export is not budgeted); an SSL
    stage with no share is skipped and the net after it starts from scratch."""
    shares = split or (SITTING if hours else FULL_SCHEDULE)
    stages = [("ssl", {"arch": "teacher"}), ("teacher", {}), ("ssl", {"arch": "student"}), ("student", {})]
    plan = []
    for i, ((cmd, kw), share) in enumerate(zip(stages, shares)):
        if cmd == "ssl" and not share:
            stages[i + 1][1]["scratch"] = True
            continue
        if hours:
            kw["budget"] = hours * 3600 * share / sum(shares)
        plan.append((cmd, kw))
    return plan + [("export", {})]


def check_sittings():
    """The smoke run's check of `all --hours [--split]`'s plan (the stages themselves run in the smoke)."""
    def plan(hours, split=None):
        return [(cmd, kw.get("arch", ""), round(kw.get("budget", 0)), bool(kw.get("scratch")))
                for cmd, kw in sitting(hours, split)]
    cases = (((1.75, [186, 120, 60, 109]), [("ssl", "teacher", 2467, False), ("teacher", "", 1592, False),
                                             ("ssl", "student", 796, False), ("student", "", 1446, False),
                                             ("export", "", 0, False)]),
             ((1.75, None), [("ssl", "teacher", 1575, False), ("teacher", "", 2835, False),
                             ("student", "", 1890, True), ("export", "", 0, False)]),
             ((2, [0, 1, 0, 1]), [("teacher", "", 3600, True), ("student", "", 3600, True), ("export", "", 0, False)]),
             ((0, None), [("ssl", "teacher", 0, False), ("teacher", "", 0, False), ("ssl", "student", 0, False),
                          ("student", "", 0, False), ("export", "", 0, False)]))
    for args, want in cases:
        got = plan(*args)
        if got != want:
            sys.exit(f"smoke: all --hours {args[0]} --split {args[1]} plans {got}, expected {want}")
    print(f"smoke: all --hours/--split plans {len(cases)} sittings as expected")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["ssl", "teacher", "student", "polish", "export", "quantize", "ablation", "teachers",
                                   "all", "smoke"])
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "ferplus"))
    p.add_argument("--work", default=os.path.join(HERE, "work"))
    p.add_argument("--out", default=os.path.join(HERE, ".."))
    p.add_argument("--arch", choices=list(ARCH), default="teacher")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=0, help="SSL steps (default: --epochs passes over the faces)")
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke runs)")
    p.add_argument("--scratch", action="store_true", help="teacher or student without SSL initialisation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="continue each stage from its last checkpoint in WORK/ckpt (saved every 25 SSL steps and every "
                   "epoch); give the same options as the interrupted run")
    p.add_argument("--balance", type=float, default=0.5,
                   help="class weights prior^-BALANCE in the label loss (0: none; 1: fully balanced)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true",
                   help="ssl/teacher/student/ablation/all: training's forward passes in bfloat16 (autocast); "
                   "refused where the CPU has no bfloat16 instructions (it would be slower than fp32)")
    p.add_argument("--width", type=int, default=0,
                   help=f"network width (ssl/teacher/student; default {WIDTH}): channels of the first stage")
    p.add_argument("--teachers", default="",
                   help="student: distil from the ensemble of these teacher.pt files (comma-separated; mean of "
                   "their softened probabilities) instead of WORK/teacher.pt")
    p.add_argument("--fractions", default="0.01,0.1,1.0",
                   help="ablation: the fractions of the train labels to fine-tune with (30, 12 and --epochs epochs)")
    p.add_argument("--mixup", type=float, default=0,
                   help="teacher/student: share of each batch replaced by blends of two faces (function matching)")
    p.add_argument("--camera", type=float, default=0,
                   help="student/teacher: share of faces the net reads through a line camera's effects (uneven "
                   "light, motion or focus blur, over- or underexposure; a student's teacher reads them clean); the "
                   "epoch is then chosen on the mean of clean val and val through those effects")
    p.add_argument("--bank", type=int, default=0,
                   help="student: distil on K augmented views of each face drawn once, with the teacher's "
                   "probabilities on them computed once (0: a fresh view and teacher pass every step); for long "
                   "schedules from an ensemble, whose forward passes would otherwise cost more than the student's; "
                   "with --resume each view is kept in WORK/ckpt/bank, 4.6 KB per face and view, and read back on resuming)")
    p.add_argument("--init", default="",
                   help="student: start from this exported student (.onnx, e.g. models/mien_student_fp32.onnx) or "
                   "student checkpoint instead of the SSL encoder")
    p.add_argument("--keep-f32", default="",
                   help="quantize: further Conv nodes (comma-separated ONNX names) to leave in f32, e.g. "
                        "/features/features.4/features.4.0/Conv")
    p.add_argument("--budget", type=float, default=0,
                   help="ssl/teacher/student: seconds this stage may take; the schedule (steps or epochs) is cut "
                   "to fit, from the time of a few probe steps, and still ends annealed (for a lent GPU's time)")
    p.add_argument("--hours", type=float, default=0,
                   help="all: hours the training stages may take together; each stage gets its share (--split) "
                   "as its --budget (export comes on top, under a minute); add --bf16 where the CPU has bfloat16: "
                   "about twice the schedule fits (1.75 h: the teacher's full 40 epochs)")
    p.add_argument("--split", default="",
                   help="all --hours: the four stages' shares of the hours (SSL teacher, teacher, SSL student, "
                   "student; any numbers, scaled to their sum; default %s; the full schedule's proportions are "
                   "%s); an SSL stage given 0 is skipped and the net it would have started trains from scratch"
                   % tuple(",".join(map(str, t)) for t in (SITTING, FULL_SCHEDULE)))
    a = p.parse_args()
    if a.hours and a.cmd != "all":
        p.error(f"--hours: only `all` takes it (give {a.cmd} a --budget in seconds)")
    if a.hours and a.budget:
        p.error("--hours and --budget: give one (--hours splits itself into a --budget per stage)")
    if a.hours < 0:
        p.error(f"--hours {a.hours}: give a positive number of hours (e.g. 2)")
    split = None
    if a.split:
        if not a.hours:
            p.error("--split: give it with all --hours (it divides those hours between the stages)")
        try:
            split = [float(x) for x in a.split.split(",")]
        except ValueError:
            split = []
        if len(split) != 4 or min(split) < 0 or split[1] <= 0 or split[3] <= 0:
            p.error(f"--split {a.split}: give four shares, SSL teacher, teacher, SSL student, student (e.g. "
                    "25,45,0,30); the teacher and the student need more than 0")
    if not 0 <= a.mixup <= 1:
        p.error(f"--mixup {a.mixup}: give the share of each batch to blend, between 0 and 1 (e.g. 0.5)")
    if not 0 <= a.camera <= 1:
        p.error(f"--camera {a.camera}: give the share of faces to pass through camera effects, between 0 and 1")
    if a.bank < 0 or (a.bank and a.mixup):
        p.error(f"--bank {a.bank}: give a number of views (e.g. 64), without --mixup (a blend's teacher "
                "probabilities are not the blend of the stored ones)")
    if a.camera and a.cmd in ("polish", "ablation"):
        p.error(f"--camera: {a.cmd} does not take it (student, teacher or all)")
    if a.init and not os.path.isfile(a.init):
        p.error(f"--init {a.init}: no such file (give an exported student .onnx or a student checkpoint)")
    if a.bf16 and not bf16_native():
        p.error("--bf16: this machine has no bfloat16 arithmetic (no avx512_bf16, amx_bf16 or arm64 bf16 in "
                "/proc/cpuinfo, or a GPU without it): autocast would emulate it, slower than fp32; leave --bf16 out")
    if a.threads:
        torch.set_num_threads(a.threads)
    ds = FerPlus(a.data)
    print(f"device {DEV}, {torch.get_num_threads()} threads, {len(ds.images)} faces"
          + (", bf16 autocast" if a.bf16 else ""))
    # The shipped model's schedule: about 6 minutes on one GPU (gpu/run.sh), about 8 hours on a 2-core CPU (use
    # --resume across sessions there).
    defaults = {"ssl": (12, 1e-3), "teacher": (40, 3e-3), "student": (64, 3e-3), "polish": (8, 3e-4),
                "ablation": (40, 3e-3)}

    def run(cmd, **kw):
        b = argparse.Namespace(**{**vars(a), **kw})
        e, lr = defaults.get(cmd, (1, 1e-3))
        b.epochs = b.epochs or e
        b.lr = b.lr or lr
        t = time.time()
        {"ssl": cmd_ssl, "teacher": cmd_teacher, "student": cmd_student, "polish": cmd_polish, "export": cmd_export,
         "quantize": cmd_quantize, "ablation": cmd_ablation, "teachers": cmd_teachers}[cmd](b, ds)
        print(f"[{cmd}{' ' + b.arch if cmd == 'ssl' else ''}] {time.time() - t:.0f} s", flush=True)

    if a.cmd == "all":
        for cmd, kw in sitting(a.hours, split):
            run(cmd, **kw)
    elif a.cmd == "smoke":
        # Every step on a few hundred images, into a scratch dir: proves the recipe runs (CI).
        check_sittings()
        kw = {"limit": 600, "work": a.work, "out": a.work, "epochs": 1}
        # The student distils from a two-member ensemble (the same teacher twice) under a --budget it never
        # reaches, with --mixup; a second trains on from the shipped student through camera effects, on a view
        # bank; then it is polished: the options of rounds two, three, five and seven (and --bank) run too.
        # Where the machine has bfloat16 arithmetic, the SSL teacher, the teacher and the bank's student train with
        # --bf16.
        two = ",".join([os.path.join(a.work, "teacher.pt")] * 2)
        bf16 = bf16_native()
        print(f"smoke: --bf16 {'on' if bf16 else 'off (no bfloat16 arithmetic here)'} for the SSL teacher, the "
              "teacher and the bank")
        for cmd, extra in (("ssl", {"arch": "teacher", "steps": 3, "bs": 32, "bf16": bf16}),
                           ("teacher", {"bf16": bf16}),
                           ("ssl", {"arch": "student", "steps": 3, "bs": 32}),
                           ("student", {"teachers": two, "budget": 3600, "mixup": 0.5}),
                           ("student", {"init": os.path.join(HERE, "..", "mien_student_fp32.onnx"), "camera": 0.5,
                                        "bank": 2, "bf16": bf16}),
                           ("polish", {"teachers": two}),
                           ("export", {})):
            run(cmd, **{**kw, **extra})
        # The round-six measurement (classifier re-training on frozen features) on the files just exported.
        from crt import main as crt
        crt(["--data", a.data, "--work", a.work, "--limit", "300", "--views", "1", "--epochs", "2",
             "--student", os.path.join(a.work, "mien_student_fp32.onnx"),
             "--teacher", os.path.join(a.work, "mien_teacher_fp32.onnx")])
        # Round seven's measurement (the exported files under a line camera's conditions).
        from robust import main as robust
        robust(["--data", a.data, "--limit", "64", "--models", ",".join(
            os.path.join(a.work, f) for f in ("mien_student_int8.onnx", "mien_student_fp32.onnx"))])
    else:
        run(a.cmd)


if __name__ == "__main__":
    main()
