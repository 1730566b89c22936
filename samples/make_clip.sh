#!/usr/bin/env bash
# Rebuild samples/clip/ from public-domain stills (see make_clip.py). Uses the models/ Python environment.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${MIEN_MODELS_VENV:-$HERE/../models/.venv}
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q -r "$HERE/../models/requirements.txt"; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && apt-get download facedetect >/dev/null 2>&1 && dpkg -x facedetect_*.deb x)
rm -rf "$HERE/clip"
"$VENV/bin/python" "$HERE/make_clip.py" "$TMP/x/usr/share/doc/facedetect/examples/grace_hopper_512x512.jpg" "$HERE/clip"
