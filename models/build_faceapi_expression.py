#!/usr/bin/env python3
"""Rebuild face-api.js's FaceExpressionNet as ONNX from the weights shipped in @vladmandic/face-api (npm, MIT).

Architecture, from face-api's JS sources: FaceFeatureExtractor = 4 dense blocks (32, 64, 128, 256 channels; the
first conv of blocks 2-4 is separable), average pool 7x7/2, fully connected 256 -> 7, softmax. The tfjs weights are
uint8-quantised (value = q * scale + min); they are dequantised here into float32.

Input of the ONNX model: [1, 112, 112, 3] float32, RGB 0..255 (the face box padded to a square, resized to 112);
face-api's mean subtraction and /255 happen inside the graph, so the firmware feeds raw pixels.
Output: probs [1, 7] in face-api's order: neutral, happy, sad, angry, fearful, disgusted, surprised.

usage: build_faceapi_expression.py MODEL_DIR OUT.onnx
"""
import json
import sys

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh


def load_weights(model_dir):
    man = json.load(open(f"{model_dir}/face_expression_model-weights_manifest.json"))[0]
    buf = open(f"{model_dir}/{man['paths'][0]}", "rb").read()
    weights, off = {}, 0
    for w in man["weights"]:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            a = np.frombuffer(buf, np.uint8, n, off).astype(np.float32) * q["scale"] + q["min"]
            off += n
        else:
            a = np.frombuffer(buf, np.float32, n, off).copy()
            off += 4 * n
        weights[w["name"]] = a.reshape(w["shape"])
    if off != len(buf):
        sys.exit(f"weights file size mismatch: read {off} of {len(buf)} bytes")
    return weights


class Graph:
    def __init__(self, weights):
        self.w, self.nodes, self.inits, self.n = weights, [], [], 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, name, arr):
        self.inits.append(nh.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def op(self, op_type, *inputs, **attrs):
        out = self.name(op_type.lower())
        self.nodes.append(h.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def conv3(self, x, w, b, stride, group=1):
        # TF "same" padding: k=3 stride 1 -> 1/1; stride 2 on an even size -> 0 top/left, 1 bottom/right.
        pads = [1, 1, 1, 1] if stride == 1 else [0, 0, 1, 1]
        ins = [x, w] + ([b] if b else [])
        return self.op("Conv", *ins, kernel_shape=[3, 3], strides=[stride, stride], pads=pads, group=group)

    def separable(self, x, p, stride):
        dw = self.w[p + "/depthwise_filter"]  # TF [3,3,C,1] -> ONNX [C,1,3,3]
        y = self.conv3(x, self.const(p + "/dw", dw.transpose(2, 3, 0, 1)), None, stride, group=dw.shape[2])
        pw = self.w[p + "/pointwise_filter"]  # TF [1,1,C,Co] -> ONNX [Co,C,1,1]
        return self.op("Conv", y, self.const(p + "/pw", pw.transpose(3, 2, 0, 1)),
                       self.const(p + "/b", self.w[p + "/bias"]), kernel_shape=[1, 1])

    def dense_block(self, x, p, first):
        if first:
            a = self.conv3(x, self.const(p + "/conv0/f", self.w[p + "/conv0/filters"].transpose(3, 2, 0, 1)),
                           self.const(p + "/conv0/b", self.w[p + "/conv0/bias"]), 2)
        else:
            a = self.separable(x, p + "/conv0", 2)
        a = self.op("Relu", a)
        b = self.separable(a, p + "/conv1", 1)
        s = self.op("Relu", self.op("Add", a, b))
        c = self.separable(s, p + "/conv2", 1)
        m = self.op("Relu", self.op("Add", a, self.op("Add", b, c)))
        d = self.separable(m, p + "/conv3", 1)
        return self.op("Relu", self.op("Add", a, self.op("Add", b, self.op("Add", c, d))))


def build(model_dir, out):
    g = Graph(load_weights(model_dir))
    x = g.op("Sub", "input", g.const("mean", np.array([122.782, 117.001, 104.298], np.float32)))
    x = g.op("Div", x, g.const("scale", np.array(255.0, np.float32)))
    x = g.op("Transpose", x, perm=[0, 3, 1, 2])
    for i, name in enumerate(["dense0", "dense1", "dense2", "dense3"]):
        x = g.dense_block(x, name, i == 0)
    x = g.op("AveragePool", x, kernel_shape=[7, 7], strides=[2, 2])
    x = g.op("Flatten", x, axis=1)
    x = g.op("Add", g.op("MatMul", x, g.const("fc/w", g.w["fc/weights"])), g.const("fc/b", g.w["fc/bias"]))
    g.nodes.append(h.make_node("Softmax", [x], ["probs"], axis=1))
    graph = h.make_graph(g.nodes, "face_api_expression",
                         [h.make_tensor_value_info("input", TP.FLOAT, [1, 112, 112, 3])],
                         [h.make_tensor_value_info("probs", TP.FLOAT, [1, 7])], g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], producer_name="mien/models")
    model.ir_version = 8
    model.metadata_props.add(key="labels", value="neutral,happy,sad,angry,fearful,disgusted,surprised")
    onnx.checker.check_model(model)
    onnx.save(model, out)
    print(f"wrote {out}: {sum(v.size for v in g.w.values())} parameters")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build(sys.argv[1], sys.argv[2])
