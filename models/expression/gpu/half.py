#!/usr/bin/env python3
"""Halve a recipe checkpoint for the trip to or from a lent GPU machine (its copy limits are 64 MiB in and
16 MiB per file out): every float tensor is stored as fp16. Loading one needs nothing special:
`load_state_dict` copies fp16 tensors into the fp32 parameters.

    python half.py IN.pt OUT.pt
"""
import sys

import torch


def half(obj):
    if isinstance(obj, torch.Tensor):
        return obj.half() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: half(v) for k, v in obj.items()}
    return obj


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    st = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
    st = {k: half(v) for k, v in st.items() if k not in ("best_state", "opt", "sched")}
    torch.save(st, sys.argv[2])
    print(f"{sys.argv[1]} -> {sys.argv[2]} (fp16)")
