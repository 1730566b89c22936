"""How the recipe judges a net: accuracy, macro-F1, per-class recall and the confusion matrix over the 8 FER+
classes, in PyTorch and through onnxruntime on the exported files. Epochs are chosen on val (`val_metrics`); test
is read only by `export`, once the model is fixed."""

import numpy as np
import torch

from data import camera_effects, framing, standardize
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
    if "clean" in m:
        views = " and ".join(f"{k} {fmt(m[k])}" for k in ("clean", "camera", "framing") if k in m)
        return f"acc={m['accuracy']:.4f} macroF1={m['macro_f1']:.4f} (mean of {views})"
    return f"acc={m['accuracy']:.4f} macroF1={m['macro_f1']:.4f} recall=" + ",".join(f"{r:.2f}" for r in m["recall"])


SHIFTED_VAL = {}


def val_metrics(a, model, ds):
    """The val figures that choose the epoch. With --camera and/or --framing, the mean of clean val and of val
    through each shift: every val face through one fixed (seeded) draw of `camera_effects` ("camera val") or of
    `framing` ("framing val"), so the choice rewards robustness to what a line camera or another crop convention
    does and still guards the clean faces."""
    m = evaluate(model, ds, "val")
    shifts = [(k, fn) for k, on, fn in (("camera", a.camera, lambda x: camera_effects(x, 1.0)),
                                        ("framing", a.framing, lambda x: framing(x, 1.0))) if on]
    if not shifts:
        return m
    idx = ds.indices("val")
    views = {"clean": m}
    for k, fn in shifts:
        if k not in SHIFTED_VAL:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)
                SHIFTED_VAL[k] = fn(ds.batch(idx))
        views[k] = metrics(logits_on(model, SHIFTED_VAL[k]).argmax(1), ds.label[idx])
    mean = lambda key: sum(v[key] for v in views.values()) / len(views)
    return {"accuracy": mean("accuracy"), "macro_f1": mean("macro_f1"), "recall": m["recall"], **views}


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
