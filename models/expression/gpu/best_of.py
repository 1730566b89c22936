#!/usr/bin/env python3
"""The best epoch so far of a stopped supervised run, as a file the recipe reads like a finished one.

    python best_of.py WORK/ckpt/student.pt WORK/student.pt

A run stopped by a lease's hang guard leaves only its checkpoint, which holds the optimizer too (4.7 MB for a
student, 11 MB for a width-32 teacher): more than a lent machine's 16 MiB per returned file allows for several.
This keeps the best epoch's weights (`best_state`), the width they were built with and their val figures.
"""
import sys

import torch

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    st = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
    width = next(v.shape[0] for v in st["best_state"].values() if v.dim() == 4)  # the first convolution's outputs
    torch.save({"model": st["best_state"], "width": width, "val": st["best"], "epoch": st["epoch"]}, sys.argv[2])
    print(f"{sys.argv[1]}: best of {st['epoch']} epochs -> {sys.argv[2]}")
