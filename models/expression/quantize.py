"""Export (`export`): BatchNorm folded, the logit adjustment chosen on val folded into the head, fp32 ONNX, then
onnxruntime static quantization to QOperator int8 (the format tract runs as int8), with onnxruntime's reference
logits for tests/eval.rs and the hashes in models/SHA256SUMS. `quantize` redoes only the int8 step."""
import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

from common import HERE
from data import standardize
from nets import EMOTIONS, macs
from evaluate import evaluate, fmt, logits_of, metrics, ort_eval, ort_logits
from distill import load_net, load_ssl, recompute_bn
from common import build, seed_all


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
    prior = ds.train_prior()
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


def cmd_encoders(a, ds):
    """Encoders as mien expression models, for the adaptation curves (`examples/adapt_curve.rs`, issue 52): each is
    exported like the shipped student (BatchNorm folded, fp32 ONNX, hashes in SHA256SUMS) into WORK/encoders, so
    `mien adapt` and the curve example fit heads on its features exactly as on the shipped model's.
    - `random.onnx`: the student architecture at its initialisation (seed --seed), the floor;
    - `ssl.onnx`: the ContraWarping encoder WORK/ssl_student.pt, trained without a single label;
    - `ablation_<init>_<labels>.onnx`: the students `ablation` saved (SSL-initialised or from scratch, fine-tuned on a
      share of the FER+ train labels, no teacher): the pair with and without ContraWarping.
    The label-free encoders get a zero head (they know no classes) and BatchNorm statistics recomputed on 8,192
    un-augmented FER+ train faces, as the firmware would show them faces; no logit adjustment is folded in."""
    import glob
    out = os.path.join(a.work, "encoders")
    os.makedirs(out, exist_ok=True)
    arms = []
    seed_all(a.seed)
    arms.append(("random", build("student", a.width), True))
    if os.path.isfile(os.path.join(a.work, "ssl_student.pt")):
        arms.append(("ssl", load_ssl(a, build("student", a.width), "student"), True))
    else:
        print(f"encoders: no ssl_student.pt in {a.work} (run `ssl --arch student` first): no ssl.onnx", flush=True)
    for p in sorted(glob.glob(os.path.join(a.work, "ablation", "*.pt"))):
        arms.append(("ablation_" + os.path.basename(p)[:-3], load_net(p, "student"), False))
    bn_idx = np.random.default_rng(a.seed).permutation(ds.indices("train", False))[:8192]
    files = []
    for name, net, label_free in arms:
        if label_free:
            with torch.no_grad():
                net.head.weight.zero_()
                net.head.bias.zero_()
            recompute_bn(net, ds, bn_idx)
        path = os.path.join(out, f"{name}.onnx")
        export_onnx(fused(net), path)
        files.append(path)
        print(f"encoders: {path}" + ("" if label_free else f" (val {fmt(evaluate(net, ds, 'val'))})"), flush=True)
    update_sums(out, files)


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
