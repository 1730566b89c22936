#!/usr/bin/env python3
"""Rebuild a recipe checkpoint (`teacher.pt` / `student.pt`) from an exported ONNX file, e.g. to distil from the
shipped teacher in a fresh checkout, or on a lent GPU, without its training checkpoints.

    python from_onnx.py teacher ../../mien_teacher_fp32.onnx WORK/teacher.pt
    python from_onnx.py student ../../mien_student_fp32.onnx WORK/shipped.pt   # a student as its own teacher

The export folds every BatchNorm into the convolution before it (and the logit adjustment into the head's bias),
so each convolution's weight goes back into the net's convolution and its bias into the BatchNorm after it, that
BatchNorm set to the identity (mean 0, variance 1; its default eps stays, within the check). Convolutions are
matched in graph order, which is the order the net's modules run in; shapes are checked, and so are the logits:
the rebuilt net, as recipe.py loads it, must reproduce onnxruntime's on random faces.
"""
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from nets import Student, Teacher, conv_bn_pairs


def rebuild(arch, path):
    m = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    gemm = [n for n in m.graph.node if n.op_type == "Gemm"]
    width = init[convs[0].input[1]].shape[0]
    net = (Teacher if arch == "teacher" else Student)(width).eval()
    pairs = conv_bn_pairs(net)
    if len(pairs) != len(convs) or len(gemm) != 1:
        sys.exit(f"{path}: {len(convs)} convolutions and {len(gemm)} Gemm heads, a width-{width} {arch} has "
                 f"{len(pairs)} and 1")
    with torch.no_grad():
        for (conv, bn), node in zip(pairs, convs):
            w = torch.from_numpy(init[node.input[1]].copy())
            if w.shape != conv.weight.shape:
                sys.exit(f"{path}: convolution {node.name} is {tuple(w.shape)}, the net's is {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            bn.weight.fill_(1), bn.running_mean.zero_(), bn.running_var.fill_(1)
            bn.bias.copy_(torch.from_numpy(init[node.input[2]].copy()) if len(node.input) > 2 else torch.zeros_like(bn.bias))
        g = gemm[0]
        w = init[g.input[1]]
        trans = next((a.i for a in g.attribute if a.name == "transB"), 0)
        net.head.weight.copy_(torch.from_numpy((w if trans else w.T).copy()))
        net.head.bias.copy_(torch.from_numpy(init[g.input[2]].copy()))
    return net


def check(net, path, n=64):
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((n, 1, 48, 48)).astype(np.float32)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(n)])
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - ref).max())
    if err > 1e-3 * max(1.0, float(np.abs(ref).max())):
        sys.exit(f"{path}: the rebuilt net's logits differ from onnxruntime's by up to {err:.2e}")
    return err


def save_rebuilt(arch, src, dst):
    """`src` (an exported ONNX file) rebuilt as an `arch` checkpoint at `dst`, checked against onnxruntime."""
    net = rebuild(arch, src)
    err = check(net, src)
    st = {"model": net.state_dict(), "width": net.width, "arch": arch, "from_onnx": os.path.basename(src)}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(st, dst)
    print(f"{src} -> {dst} (width-{net.width} {arch}; logits match onnxruntime's to {err:.1e})")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("teacher", "student"):
        sys.exit(__doc__)
    save_rebuilt(*sys.argv[1:])
