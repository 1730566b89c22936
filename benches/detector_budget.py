#!/usr/bin/env python3
"""What a small-face detector of YuNet's class would cost in tract at the frame's own resolution (issue 51): the
sizing behind "a detector that sees 16 px faces without the pyramid". It writes an ONNX file of such a network with
random weights (its speed, not its accuracy, is what is measured), for examples/op_profile to time against the
pyramid's models and onnxruntime:

    models/.venv/bin/python benches/detector_budget.py /tmp/budget.onnx
    taskset -c 1 target/release/examples/op_profile --shape 1,3,480,640 --runs 20 --ort models/.venv/bin/python /tmp/budget.onnx

The network: a 3x3 stride-2 stem of 16 channels, then depthwise-separable blocks (3x3 depthwise + 1x1 pointwise,
ReLU) at strides 2, 4, 8, 16 and 32 with 16, 32, 64, 64 and 64 channels (max-pool between stages, as BlazeFace and
YuNet do), and a 1x1 head at strides 8, 16 and 32 (score, box, five keypoints: 15 channels each). That is YuNet's
layout and size class (about 0.15 GFLOP at 320x320 as published), the lightest published detector that finds faces
down to about 10 px.
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "expression"))
from nets import macs  # noqa: E402


def sep(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1), nn.ReLU())


class Budget(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), sep(16, 16))
        self.s4 = nn.Sequential(nn.MaxPool2d(2), sep(16, 32), sep(32, 32))
        self.s8 = nn.Sequential(nn.MaxPool2d(2), sep(32, 64), sep(64, 64))
        self.s16 = nn.Sequential(nn.MaxPool2d(2), sep(64, 64), sep(64, 64))
        self.s32 = nn.Sequential(nn.MaxPool2d(2), sep(64, 64), sep(64, 64))
        self.heads = nn.ModuleList(nn.Conv2d(64, 15, 1) for _ in range(3))

    def forward(self, x):
        a = self.s8(self.s4(self.stem(x)))
        b = self.s16(a)
        c = self.s32(b)
        return tuple(h(f) for h, f in zip(self.heads, (a, b, c)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.manual_seed(0)
    net = Budget().eval()
    for shape in ((1, 3, 320, 320), (1, 3, 480, 640)):
        print(f"{shape[2]}x{shape[3]}: {2 * macs(net, shape=shape) / 1e9:.3f} GFLOP "
              f"({sum(p.numel() for p in net.parameters())} parameters)")
    torch.onnx.export(net, torch.zeros(1, 3, 480, 640), sys.argv[1], input_names=["input"], opset_version=13,
                      dynamic_axes={"input": {2: "h", 3: "w"}}, dynamo=False)
    print(f"-> {sys.argv[1]}")
