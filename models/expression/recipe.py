#!/usr/bin/env python3
"""mien's expression model recipe, the one runner: ContraWarping SSL -> teacher -> distilled student -> int8 ONNX.

    python recipe.py all                     # the shipped recipe, every stage in order (train.sh all runs this)
    python recipe.py ssl --arch teacher      # ContraWarping pretraining on unlabelled FER+ train+val faces
    python recipe.py teacher                 # fine-tune the SSL teacher on FER+ train (soft labels), pick on val
    python recipe.py ssl --arch student      # same pretraining for the student encoder
    python recipe.py student                 # distil teacher -> student (starts from the SSL student): 200 epochs
                                             #   of batches of 256, the shipped student's schedule
    python recipe.py export                  # fold BN, logit adjustment chosen on val, fp32 ONNX, int8 QOperator ONNX
    python recipe.py quantize                # the int8 step alone, from the exported fp32 student
    python recipe.py ablation                # SSL vs scratch students with 1/10/100% of the labels (kept in
                                             #   WORK/ablation)
    python recipe.py encoders                # random, ContraWarping and ablation encoders as mien models in
                                             #   WORK/encoders, for examples/adapt_curve.rs (adaptation curves)
    python recipe.py all --hours 1.75 [--bf16]   # one sitting on a CPU: each stage gets a share of the hours as
                                             #   its --budget (--split sets the shares), no SSL student by default
    python recipe.py smoke                   # every step and option on a few hundred images (CI)
    add --resume to continue where an interrupted run stopped (checkpoints in WORK/ckpt)

Further options, kept for the experiments in EXPERIMENTS.md: `student --init F.onnx` (train on from an exported
student), `--mixup`, `--bank K`, `--camera`, `--framing`, `--teachers A.pt,B.pt` (distil from an ensemble, or from
a student rebuilt by from_onnx.py), `polish` (weight averaging), `teachers` (report teachers and their ensemble),
`--width`, `--budget`, `--keep-f32`.

The stages are modules: data (FER+, augmentations, local warps), nets (teacher, student), contrawarping (SSL),
distill (teacher, student, ablation), quantize (export, int8), evaluate (metrics, onnxruntime); common holds what
they share. Each imports only those listed before it. Seeded; uses CUDA when present, never needs it. Data:
--data (default ../shared/data/ferplus). Test rows are never read here except by `export` to write the final
numbers once the model is fixed (selection uses val only).
"""
import argparse
import os
import sys
import time

import torch

from common import ARCH, DEV, HERE, WIDTH, bf16_native
from contrawarping import cmd_ssl
from data import FerPlus
from distill import cmd_ablation, cmd_polish, cmd_student, cmd_teacher, cmd_teachers
from quantize import cmd_encoders, cmd_export, cmd_quantize


# Time per training stage on this project's 2-core CPU, in minutes (SSL teacher, teacher, SSL student, student),
# with the 64-epoch student the sittings use (the shipped 200 epochs of 256: about 340 min): --split with these
# numbers keeps the full schedule's proportions.
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


def extra_faces(ds, work, n=64):
    """The smoke's stand-in for a site's unlabelled faces (`ssl --extra`): n val faces written in the layout of
    examples/face_crops.rs."""
    d = os.path.join(work, "extra")
    os.makedirs(d, exist_ok=True)
    ds.images[ds.indices("val", False)[:n]].tofile(os.path.join(d, "images.u8"))
    with open(os.path.join(d, "labels.csv"), "w") as f:
        f.write("path,split,label\n" + "".join(f"val{i},extra,unknown\n" for i in range(n)))
    return d


def check_imports():
    """The smoke run's check that the recipe's modules import one another one way (no circles)."""
    import ast
    import glob
    mods = {os.path.basename(f)[:-3]: f for f in glob.glob(os.path.join(HERE, "*.py"))}
    deps = {}
    for m, f in mods.items():
        with open(f) as fh:
            tree = ast.parse(fh.read())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        deps[m] = sorted(names & set(mods))
    state = {}

    def walk(m, path):
        if state.get(m) == 1:
            sys.exit("smoke: import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) != 2:
            state[m] = 1
            for d in deps[m]:
                walk(d, path + [m])
            state[m] = 2
    for m in sorted(mods):
        walk(m, [])
    print(f"smoke: {len(mods)} recipe modules import one way")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["ssl", "teacher", "student", "polish", "export", "quantize", "ablation", "teachers",
                                   "encoders", "all", "smoke"])
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "ferplus"))
    p.add_argument("--work", default=os.path.join(HERE, "work"))
    p.add_argument("--out", default=os.path.join(HERE, ".."))
    p.add_argument("--arch", choices=list(ARCH), default="teacher")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=0, help="SSL steps (default: --epochs passes over the faces)")
    p.add_argument("--bs", type=int, default=0, help="batch size (default: the stage's in the shipped schedule)")
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
    p.add_argument("--framing", type=float, default=0,
                   help="student/teacher: share of faces the net reads cut by another crop convention (a square "
                   "0.7-1.4 times the firmware's crop, moved by up to 10%% of its side; a student's teacher reads the "
                   "firmware's crop); the epoch is then chosen on the mean of clean val and val so re-framed")
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
    p.add_argument("--extra", default="",
                   help="ssl: also pretrain on these unlabelled faces (a site's, in FER+'s layout as written by "
                   "examples/face_crops.rs: DIR/images.u8 and DIR/labels.csv)")
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
    if not 0 <= a.framing <= 1:
        p.error(f"--framing {a.framing}: give the share of faces to cut by another crop convention, between 0 and 1")
    for flag, on in (("--camera", a.camera), ("--framing", a.framing)):
        if on and a.cmd in ("polish", "ablation"):
            p.error(f"{flag}: {a.cmd} does not take it (student, teacher or all)")
    if a.init and not os.path.isfile(a.init):
        p.error(f"--init {a.init}: no such file (give an exported student .onnx or a student checkpoint)")
    if a.bf16 and not bf16_native():
        p.error("--bf16: this machine has no bfloat16 arithmetic (no avx512_bf16, amx_bf16 or arm64 bf16 in "
                "/proc/cpuinfo, or a GPU without it): autocast would emulate it, slower than fp32; leave --bf16 out")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.extra and a.cmd != "ssl":
        p.error(f"--extra: only `ssl` reads unlabelled faces ({a.cmd} trains on labels)")
    if a.extra and not os.path.isfile(os.path.join(a.extra, "images.u8")):
        p.error(f"--extra {a.extra}: no images.u8 there (write it with examples/face_crops.rs)")
    ds = FerPlus(a.data)
    print(f"device {DEV}, {torch.get_num_threads()} threads, {len(ds.images)} faces"
          + (", bf16 autocast" if a.bf16 else ""))
    # The shipped model's schedule (epochs, learning rate, batch): about 15 minutes on one H200 (gpu/run.sh), about
    # 12 hours on a 2-core CPU (use --resume across sessions there). `all --hours` sittings were measured with the
    # earlier student schedule, 64 epochs of 128, cut by their budgets; they keep it.
    defaults = {"ssl": (12, 1e-3, 128), "teacher": (40, 3e-3, 128), "student": (200, 3e-3, 256),
                "polish": (8, 3e-4, 128), "ablation": (40, 3e-3, 128)}
    if a.hours:
        defaults["student"] = (64, 3e-3, 128)

    def run(cmd, **kw):
        b = argparse.Namespace(**{**vars(a), **kw})
        e, lr, bs = defaults.get(cmd, (1, 1e-3, 128))
        b.epochs = b.epochs or e
        b.lr = b.lr or lr
        b.bs = b.bs or bs
        t = time.time()
        {"ssl": cmd_ssl, "teacher": cmd_teacher, "student": cmd_student, "polish": cmd_polish, "export": cmd_export,
         "quantize": cmd_quantize, "ablation": cmd_ablation, "teachers": cmd_teachers,
         "encoders": cmd_encoders}[cmd](b, ds)
        print(f"[{cmd}{' ' + b.arch if cmd == 'ssl' else ''}] {time.time() - t:.0f} s", flush=True)

    if a.cmd == "all":
        for cmd, kw in sitting(a.hours, split):
            run(cmd, **kw)
    elif a.cmd == "smoke":
        # Every step on a few hundred images, into a scratch dir: proves the recipe runs (CI).
        check_sittings()
        check_imports()
        kw = {"limit": 600, "work": a.work, "out": a.work, "epochs": 1}
        # The student distils from a two-member ensemble (the same teacher twice) under a --budget it never
        # reaches, with --mixup; a second trains on from the shipped student through camera effects and other crop
        # conventions, on a view bank, taught by the shipped student itself (rebuilt by from_onnx.py); then it is
        # polished: the options of rounds two, three, five, seven and thirteen (and --bank) run too.
        # Where the machine has bfloat16 arithmetic, the SSL teacher, the teacher and the bank's student train with
        # --bf16.
        two = ",".join([os.path.join(a.work, "teacher.pt")] * 2)
        shipped = os.path.join(HERE, "..", "mien_student_fp32.onnx")
        from from_onnx import save_rebuilt
        save_rebuilt("student", shipped, os.path.join(a.work, "shipped_student.pt"))
        bf16 = bf16_native()
        print(f"smoke: --bf16 {'on' if bf16 else 'off (no bfloat16 arithmetic here)'} for the SSL teacher, the "
              "teacher and the bank")
        for cmd, extra in (("ssl", {"arch": "teacher", "steps": 3, "bs": 32, "bf16": bf16}),
                           ("teacher", {"bf16": bf16}),
                           ("ssl", {"arch": "student", "steps": 3, "bs": 32, "extra": extra_faces(ds, a.work)}),
                           ("student", {"teachers": two, "budget": 3600, "mixup": 0.5}),
                           ("student", {"init": shipped, "camera": 0.5, "framing": 0.5, "bank": 2, "bf16": bf16,
                                        "teachers": os.path.join(a.work, "shipped_student.pt")}),
                           ("polish", {"teachers": two}),
                           ("export", {}),
                           ("ablation", {"fractions": "0.01"}),
                           ("encoders", {})):
            run(cmd, **{**kw, **extra})
        # The robustness measurement (the exported files under a line camera's conditions; EXPERIMENTS.md).
        from robust import main as robust
        exported = ",".join(os.path.join(a.work, f) for f in ("mien_student_int8.onnx", "mien_student_fp32.onnx"))
        robust(["--data", a.data, "--limit", "64", "--models", exported])
        robust(["--data", a.data, "--limit", "64", "--models", exported, "--framing"])
        robust(["--data", a.data, "--limit", "64", "--models", exported, "--prior=-0.25,0,0.5"])
    else:
        run(a.cmd)


if __name__ == "__main__":
    main()
