#!/usr/bin/env python3
"""Convert registry-shipped expression models (PyTorch) into mien's `face01` peer contract, for `mien eval` only.

    build_peers.py CACHE OUT_DIR

Contract (read by src/expression.rs from the input name): input `face01` [1,1,48,48] grey in [0,1]; output
8 scores in FER+ order (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt). Each model's own
normalization and class order live inside the wrapper; these FER2013-trained models have no contempt class, so
its score is fixed at -1e4 (never chosen). Peers are evaluated, never shipped (models/peers is not committed).
"""
import glob
import hashlib
import importlib.util
import os
import sys

import numpy as np
import onnxruntime as ort
import torch

FER2013 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FERPLUS = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]


class Peer(torch.nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std
        self.register_buffer("order", torch.tensor([FER2013.index(c) for c in FERPLUS[:7]]))

    def forward(self, x):
        y = self.net((x - self.mean) / self.std)
        y = y.index_select(1, self.order)
        return torch.cat([y, torch.full_like(y[:, :1], -1e4)], 1)


def module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def export(peer, out):
    peer.eval()
    x = torch.rand(1, 1, 48, 48)
    torch.onnx.export(peer, x, out, input_names=["face01"], output_names=["scores"], opset_version=13, dynamo=False)
    with torch.no_grad():
        ref = peer(x).numpy()
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"face01": x.numpy()})[0]
    assert np.abs(ref - got).max() < 1e-4, f"{out}: torch and onnxruntime disagree"
    print(f"{os.path.basename(out)}: {sum(p.numel() for p in peer.parameters()) / 1e6:.2f}M params, "
          f"{os.path.getsize(out) / 1e6:.1f} MB")


def main(cache, out):
    os.makedirs(out, exist_ok=True)
    # what-the-face-classification 0.0.27 (MIT): FER2013 + CK+, 48x48 grey in [0,1], tanh CNN.
    root = glob.glob(os.path.join(cache, "what-the-face-classification", "what_the_face_classification"))[0]
    wtf = module(os.path.join(root, "model.py"), "wtf_model")
    side = 48
    for k in (3, 3, 3):
        side = (side - k + 1) // 2
    net = wtf.SimpleConvolutionalNetwork(3, [[1, 28], [28, 56], [56, 112]], [3, 3, 3], [0, 0, 0], 304, side * side * 112)
    net.load_state_dict(torch.load(os.path.join(root, "active_model.pth"), map_location="cpu"))
    export(Peer(net, 0.0, 1.0), os.path.join(out, "wtf_fer_cnn.onnx"))
    # PyEmotion 1.0.0 (MIT): 48x48 grey, (x-0.5)/0.5, NetworkV2 (sigmoid outputs; PyEmotion takes the argmax).
    root = os.path.join(cache, "PyEmotion", "PyEmotion")
    pe = module(os.path.join(root, "networks.py"), "pe_networks")
    net = pe.NetworkV2(in_c=1, nl=32, out_f=7)
    net.load_state_dict(torch.load(os.path.join(root, "model", "main_model.pkl"), map_location="cpu", weights_only=False)["network"])
    export(Peer(net, 0.5, 0.5), os.path.join(out, "pyemotion_fer_cnn.onnx"))
    with open(os.path.join(out, "SHA256SUMS"), "w") as f:
        for name in ("wtf_fer_cnn.onnx", "pyemotion_fer_cnn.onnx"):
            f.write(f"{hashlib.sha256(open(os.path.join(out, name), 'rb').read()).hexdigest()}  {name}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
