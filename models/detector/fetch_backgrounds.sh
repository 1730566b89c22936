#!/usr/bin/env bash
# Backgrounds for the detector's training frames: photographs and abstract pictures without faces from Debian's
# desktop background packages, downloaded as .debs and unpacked (not installed) under WORK/backgrounds.
# usage: fetch_backgrounds.sh WORK
set -euo pipefail
WORK=${1:?usage: fetch_backgrounds.sh WORK}
DEST="$WORK/backgrounds"
[ -e "$DEST/.done" ] && exit 0
mkdir -p "$DEST/debs"
cd "$DEST/debs"
for p in mate-backgrounds gnome-backgrounds; do
    ls ${p}_*.deb >/dev/null 2>&1 || apt-get download "$p" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
    ls ${p}_*.deb >/dev/null 2>&1 || { echo "fetch_backgrounds: apt-get download $p failed" >&2; exit 1; }
done
for d in *.deb; do dpkg-deb -x "$d" "$DEST/unpacked"; done
# The huge variants of one picture add nothing but load time.
find "$DEST/unpacked" -name '*_[0-9]*x[0-9]*.jpg' -delete
touch "$DEST/.done"
echo "fetch_backgrounds: $(find "$DEST/unpacked" -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.webp' \) | wc -l) pictures in $DEST"
