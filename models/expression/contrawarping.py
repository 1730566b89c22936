"""ContraWarping self-supervised pretraining (Xue, Sun, Yang, ABAW 2023, arXiv 2303.10511), the `ssl` step.

BYOL-style online/target networks: two global views of a face (crop, flip, rotation, gamma) are positives; the same
global view of a locally warped face (brows, eyes, mouth moved) is the negative. The encoder must keep what the
local warps change: expression. Labels are never read (FER+ train + val images; never test)."""
import copy
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data import apply_global, global_params, local_warp, photometric, standardize
from common import DEV, autocast, build, load_ckpt, one_cycle, probe_step_time, save, save_ckpt, seed_all


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
    if a.extra and not (ds.split == "extra").any():
        print(f"--extra: {ds.add_unlabelled(a.extra)} unlabelled faces from {a.extra}", flush=True)
    net = build(a.arch, a.width)
    model = ContraWarping(net.features, net.dim).to(DEV)
    pool = np.concatenate([ds.indices("train", False), ds.indices("val", False)])  # labels ignored; never test
    if a.limit:
        pool = pool[:a.limit]
    pool = np.concatenate([pool, ds.indices("extra", False)])  # `--extra`: a site's unlabelled faces too
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
