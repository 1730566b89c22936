#!/usr/bin/env bash
# The expression recipe with its pinned environment (models/README.md is the model card):
#   models/expression/train.sh all          # the shipped recipe: SSL teacher -> teacher -> SSL student -> student (200
#                                           #   epochs of 256) -> export; ~12 h on 2 cores (--resume to continue), the
#                                           #   training stages ~15 min on one GPU: models/expression/gpu/run.sh
#   models/expression/train.sh all --hours 1.75 [--bf16]   # one sitting on a CPU: each stage gets a share of the
#                                           #   hours (--split), no SSL student; --bf16 where the CPU has bfloat16
#   models/expression/train.sh smoke        # every step and option on 600 faces into a scratch dir (CI)
#   models/expression/train.sh ablation     # SSL vs scratch students with 1/10/100% of the labels
#   models/expression/train.sh encoders     # those, the SSL encoder and a random one as models for the adaptation
#                                           #   curves (examples/adapt_curve.rs)
#   models/expression/train.sh <step> ...   # ssl --arch teacher|student, teacher, student, export, quantize (the int8
#                                           #   step alone), and the experiments' polish and teachers (EXPERIMENTS.md)
#   add --resume to continue an interrupted run (same options; checkpoints in models/expression/work/ckpt)
# Data: FER+ in ../shared/data/ferplus (override with MIEN_FERPLUS). Python env: MIEN_MODELS_VENV or models/.venv.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${MIEN_MODELS_VENV:-$HERE/../.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import torch, tqdm, onnx, onnxruntime" 2>/dev/null || "$VENV/bin/pip" install -q --no-cache-dir -r "$HERE/requirements.txt"
DATA=${MIEN_FERPLUS:-}
for d in "$DATA" "$HERE/../../../shared/data/ferplus" /work/shared/data/ferplus; do
    if [ -n "$d" ] && [ -f "$d/images.u8" ]; then DATA=$d; break; fi
done
[ -f "$DATA/images.u8" ] || { echo "train.sh: FER+ not found (set MIEN_FERPLUS to the directory with images.u8 and labels.csv)" >&2; exit 1; }
CMD=${1:?usage: train.sh all|smoke|ablation|encoders|ssl|teacher|student|polish|export|quantize|teachers [options]}
shift
if [ "$CMD" = smoke ]; then
    WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
    exec_args=(--work "$WORK")
else
    exec_args=()
fi
"$VENV/bin/python" "$HERE/recipe.py" "$CMD" --data "$DATA" "${exec_args[@]}" "$@"
