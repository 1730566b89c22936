"""How the recipe judges a net: accuracy, macro-F1, per-class recall and the confusion matrix over the 8 FER+
classes, in PyTorch and through onnxruntime on the exported files. Epochs are chosen on val (`val_metrics`); test
is read only by `export`, once the model is fixed."""

import numpy as np
import torch

from data import camera_effects, standardize
from common import DEV


def metrics(pred, true, k=8):
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (true, pred), 1)
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    prec = np.diag(cm) / np.maximum(cm.sum(0), 1)
    f1 = np.where(recall + prec > 0, 2 * recall * prec / np.maximum(recall + prec, 1e-12), 0)
    return {"accuracy": float(np.diag(cm).sum() / cm.sum()), "macro_f1": float(f1.mean()),
            "recall": recall.tolist(), "confusion": cm.tolist(), "n": int(cm.sum())}


@torch.no_grad()
def logits_on(model, faces, bs=512):
    """Logits for faces in [0, 1] (N, 1, S, S, on the CPU), standardized per image as the firmware does."""
    model.eval()
    return torch.cat([model(standardize(faces[i:i + bs].to(DEV))).float().cpu()
                      for i in range(0, len(faces), bs)]).numpy()


def logits_of(model, ds, idx, bs=512):
    return logits_on(model, ds.batch(idx), bs)


def evaluate(model, ds, split, bias=None):
    idx = ds.indices(split)
    lg = logits_of(model, ds, idx)
    if bias is not None:
        lg = lg + bias
    return metrics(lg.argmax(1), ds.label[idx])


def fmt(m):
    if "camera" in m:
        return (f"acc={m['accuracy']:.4f} macroF1={m['macro_f1']:.4f} (mean of clean {fmt(m['clean'])} "
                f"and camera {fmt(m['camera'])})")
    return f"acc={m['accuracy']:.4f} macroF1={m['macro_f1']:.4f} recall=" + ",".join(f"{r:.2f}" for r in m["recall"])


CAMERA_VAL = {}


def val_metrics(a, model, ds):
    """The val figures that choose the epoch. With --camera, the mean of clean val and of "camera val": every val
    face through one fixed (seeded) draw of `camera_effects`, so the choice rewards robustness to what a line
    camera does and still guards the clean faces."""
    m = evaluate(model, ds, "val")
    if not a.camera:
        return m
    idx = ds.indices("val")
    if "x" not in CAMERA_VAL:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            CAMERA_VAL["x"] = camera_effects(ds.batch(idx), 1.0)
    c = metrics(logits_on(model, CAMERA_VAL["x"]).argmax(1), ds.label[idx])
    return {"accuracy": (m["accuracy"] + c["accuracy"]) / 2, "macro_f1": (m["macro_f1"] + c["macro_f1"]) / 2,
            "recall": m["recall"], "clean": m, "camera": c}


def ort_session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def ort_run(session, faces):
    """onnxruntime's logits for model-ready faces (N, 1, S, S), one at a time, as the firmware runs them."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: faces[i:i + 1].numpy()})[0] for i in range(len(faces))])


def ort_logits(path, ds, idx):
    """onnxruntime's logits for the FER+ faces `idx`, standardized per image."""
    return ort_run(ort_session(path), standardize(ds.batch(idx)))


def ort_eval(path, ds, split):
    idx = ds.indices(split)
    return metrics(ort_logits(path, ds, idx).argmax(1), ds.label[idx])
