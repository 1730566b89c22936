"""What every training stage shares: the device, the two architectures at their shipped widths, seeding,
atomic saves, resumable checkpoints (`--resume`), the one-cycle schedule, bf16 autocast and the step-time probe
that turns `--budget` into a schedule."""
import copy
import os
import random
import time

import numpy as np
import torch

from nets import Student, Teacher

HERE = os.path.dirname(os.path.abspath(__file__))
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


def one_cycle(opt, lr, total, pct):
    """One-cycle schedule (warm-up for `pct` of `total` steps, then cosine decay) that also takes very short runs,
    e.g. a small --budget: PyTorch's OneCycleLR divides by zero when either phase is under one step. Schedules of
    20 steps or more are exactly OneCycleLR's."""
    total = max(total, 4)
    return torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, pct_start=min(max(pct, 2.0 / total), 0.5))


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
