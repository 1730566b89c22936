"""Networks of the expression recipe.

Both nets use only what tract's int8 path runs well: plain 3x3 convolutions (no depthwise), ReLU, a global
average pool and one matrix multiply. BatchNorm is folded into the convolutions before export.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

EMOTIONS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Block(nn.Module):
    """Residual block of two 3x3 convolutions (teacher only)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)), inplace=True)
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)), inplace=True)


class Classifier(nn.Module):
    """An encoder (`features`, what SSL pretrains, ending in a `dim`-vector) + dropout + linear head."""

    def __init__(self, features, dim, dropout, classes):
        super().__init__()
        self.features = features
        self.dim = dim
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.drop(self.features(x)))


class Teacher(Classifier):
    """ResNet-style encoder for 48x48 grey faces."""

    def __init__(self, width=32, classes=8):
        w = width
        super().__init__(nn.Sequential(
            conv_bn(1, w),                      # 48
            Block(w, 2 * w, 2), Block(2 * w, 2 * w, 1),   # 24
            Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w, 1),  # 12
            Block(4 * w, 8 * w, 2), Block(8 * w, 8 * w, 1),  # 6
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ), 8 * w, 0.3, classes)
        self.width = width


class Student(Classifier):
    """Plain-convolution student: 7 convs + pool + linear. Input 1x{48|64}x{48|64}, values in [0, 1]."""

    def __init__(self, width=16, classes=8):
        w = width
        super().__init__(nn.Sequential(
            conv_bn(1, w),
            conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w),
            conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w),
            conv_bn(4 * w, 8 * w, 2), conv_bn(8 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ), 8 * w, 0.2, classes)
        self.width = width


def conv_bn_pairs(net):
    """Each Conv2d of `net` with the BatchNorm2d that follows it in module order (the order the layers run in; every
    convolution of both nets has one): what the export folds together, and what from_onnx.py and distill.py's
    `unfold_bn` take apart."""
    mods = list(net.modules())
    return [(c, next(b for b in mods[i + 1:] if isinstance(b, nn.BatchNorm2d)))
            for i, c in enumerate(mods) if isinstance(c, nn.Conv2d)]


def macs(model, size=48, shape=None):
    """Multiply-accumulates of one forward pass (convolutions and linear layers) on a `size`x`size` grey face, or on
    an input of `shape` (N, C, H, W)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(shape or (1, 1, size, size)))
    model.train(was)
    for h in hs:
        h.remove()
    return total
