"""The supervised stages: the teacher fine-tuned from its ContraWarping encoder on FER+ vote distributions
(`teacher`), the student distilled from it (`student`), and the options around them (a teacher ensemble, a view
bank, camera effects, mixup, weight-averaging `polish`), plus the SSL-vs-scratch label-efficiency `ablation`."""
import copy
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data import FerPlus, SIZE, augment, camera_effects, framing, standardize
from nets import EMOTIONS, conv_bn_pairs
from common import (DEV, HERE, autocast, build, load_ckpt, one_cycle, probe_step_time, save, save_ckpt, seed_all,
                    width_of)
from evaluate import evaluate, fmt, val_metrics


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
        # --framing: the same, for another tool's crop convention (scale 0.7-1.4, shifts): the teacher reads the
        # firmware's crop, the student a tighter, looser or moved one of the same face.
        inp = x
        if a.framing:
            inp = framing(inp, a.framing)
        if a.camera:
            inp = camera_effects(inp, a.camera)
        inp = standardize(inp) if a.camera or a.framing else clean
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
    """The teachers named by --teachers (comma-separated), else WORK/teacher.pt: (path, net in eval mode) pairs. A
    file holding a student (from_onnx.py student ...) is read as one: with --framing or --camera the shipped student
    can teach itself to read other crops and cameras as it reads its own, which leaves its clean faces alone."""
    paths = a.teachers.split(",") if a.teachers else [os.path.join(a.work, "teacher.pt")]
    for p in paths:
        if not os.path.isfile(p):
            sys.exit(f"teacher checkpoint {p} not found: train one (`teacher`), or rebuild the shipped teacher from "
                     f"its ONNX file: python {os.path.relpath(os.path.join(HERE, 'from_onnx.py'))} teacher "
                     f"{os.path.relpath(os.path.join(HERE, '..', 'mien_teacher_fp32.onnx'))} {p}")
    nets = []
    for p in paths:
        st = torch.load(p, map_location="cpu")
        nets.append((p, net_from(st, st.get("arch", "teacher")).to(DEV).eval()))
    return nets


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
    """Undo the export's BatchNorm folding so a net rebuilt by from_onnx.py (each BatchNorm the identity plus
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
          "init": a.init, "mixup": a.mixup, "camera": a.camera, "framing": a.framing, "bank": a.bank,
          "seed": a.seed, "teachers": a.teachers or "teacher.pt", "bf16": a.bf16},
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
            # Kept for the adaptation curves (`encoders` exports them): the pair with and without ContraWarping.
            save({"model": net.state_dict(), "width": net.width, "val": best, "labels": frac, "init": init,
                  "seed": a.seed}, os.path.join(a.work, "ablation", f"{init}_{frac:g}.pt"))
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
