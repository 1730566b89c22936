#!/usr/bin/env bash
# Build mien's .deb for one target with dpkg-deb (no extra tools):
#   scripts/make-deb.sh [--target TRIPLE] [--bin PATH] [--board NAME] [--out DIR]
# --target  x86_64-unknown-linux-gnu (default), aarch64-unknown-linux-gnu|musl, armv7-unknown-linux-gnueabihf
# --bin     the mien binary (default target/TRIPLE/release/mien, or target/release/mien for the host)
# --board   profile installed as /etc/mien/mien.toml (default: generic-aarch64 on arm64/amd64, armv7 on armhf)
# Contents: /usr/bin/mien, models in /usr/share/mien/models (with SHA256SUMS), board profiles in
# /etc/mien/boards, /etc/mien/mien.toml, the hardened unit /lib/systemd/system/mien.service, docs.
# Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu BIN= BOARD= OUT=target/deb
while [ $# -gt 0 ]; do
    case $1 in
        --target) TARGET=$2; shift 2;; --bin) BIN=$2; shift 2;; --board) BOARD=$2; shift 2;; --out) OUT=$2; shift 2;;
        *) echo "make-deb.sh: unknown option $1" >&2; exit 2;;
    esac
done
case $TARGET in
    x86_64-*) ARCH=amd64;; aarch64-*) ARCH=arm64;; armv7-*) ARCH=armhf;;
    *) echo "make-deb.sh: no Debian architecture for $TARGET" >&2; exit 2;;
esac
if [ -z "$BIN" ]; then
    BIN=target/$TARGET/release/mien
    [ -x "$BIN" ] || BIN=target/release/mien
fi
[ -x "$BIN" ] || { echo "make-deb.sh: $BIN missing: cargo build --release --target $TARGET first" >&2; exit 1; }
case $TARGET in *-musl*) DEPENDS=;; *) DEPENDS="libc6";; esac
[ -n "$BOARD" ] || { [ $ARCH = armhf ] && BOARD=armv7 || BOARD=generic-aarch64; }
[ -f "boards/$BOARD.toml" ] || { echo "make-deb.sh: boards/$BOARD.toml missing" >&2; exit 1; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

ROOT=$(mktemp -d); trap 'rm -rf "$ROOT"' EXIT
chmod 755 "$ROOT"
install -Dm755 "$BIN" "$ROOT/usr/bin/mien"
# Strip with the target's binutils when they are there (Debian's cross gcc packages bring them).
case $ARCH in amd64) STRIP=strip;; arm64) STRIP=aarch64-linux-gnu-strip;; armhf) STRIP=arm-linux-gnueabihf-strip;; esac
if command -v "$STRIP" >/dev/null; then "$STRIP" --strip-unneeded "$ROOT/usr/bin/mien"; else echo "make-deb.sh: no $STRIP, binary left unstripped" >&2; fi
for m in blazeface_full_range.onnx blazeface_short_range.onnx mien_face.onnx mien_student_int8.onnx mien_student_fp32.onnx faceapi_expression.onnx SHA256SUMS; do
    install -Dm644 "models/$m" "$ROOT/usr/share/mien/models/$m"
done
for b in boards/*.toml; do
    [ "$(basename "$b")" = default.toml ] || install -Dm644 "$b" "$ROOT/etc/mien/boards/$(basename "$b")"
done
{ echo "# mien's configuration (the service reads this file). Installed from boards/$BOARD.toml;"
  echo "# other profiles are in /etc/mien/boards/. Check with: mien doctor --config /etc/mien/mien.toml"
  cat "boards/$BOARD.toml"; } > "$ROOT/etc/mien/mien.toml"
chmod 644 "$ROOT/etc/mien/mien.toml"
install -Dm644 packaging/mien.service "$ROOT/lib/systemd/system/mien.service"
install -Dm644 packaging/prometheus/mien-alerts.yml "$ROOT/usr/share/mien/prometheus/mien-alerts.yml"
# Drop-in for Pi camera modules (libcamera), installed by hand into /etc/systemd/system/mien.service.d/.
install -Dm644 packaging/libcamera.conf "$ROOT/usr/share/mien/systemd/libcamera.conf"
install -Dm644 README.md "$ROOT/usr/share/doc/mien/README.md"
install -Dm644 models/ATTRIBUTION.md "$ROOT/usr/share/doc/mien/MODELS-ATTRIBUTION.md"
install -Dm644 models/README.md "$ROOT/usr/share/doc/mien/MODEL-CARD.md"
install -Dm644 models/detector/README.md "$ROOT/usr/share/doc/mien/DETECTOR-CARD.md"
printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: mien\n\nFiles: *\nLicense: MIT or Apache-2.0\n\nFiles: usr/share/mien/models/*\nLicense: see /usr/share/doc/mien/MODELS-ATTRIBUTION.md\n' \
    > "$ROOT/usr/share/doc/mien/copyright"
mkdir -p "$ROOT/DEBIAN"
install -m755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$ROOT/DEBIAN/"
(cd "$ROOT" && find etc -type f | sed 's|^|/|' | sort) > "$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
{
    echo "Package: mien"
    echo "Version: $VERSION"
    echo "Architecture: $ARCH"
    echo "Maintainer: mien developers <mien@localhost>"
    echo "Installed-Size: $SIZE"
    [ -n "$DEPENDS" ] && echo "Depends: $DEPENDS"
    echo "Suggests: prometheus-node-exporter"
    echo "Section: video"
    echo "Priority: optional"
    echo "Description: camera firmware: blurs faces in place, sends only expression labels"
    echo " Captures frames through V4L2, finds faces, blurs them in the frame before anything else sees it,"
    echo " reads each face's expression with a small int8 model (tract) and sends only the labels (MQTT)."
    echo " Built for $TARGET."
} > "$ROOT/DEBIAN/control"
mkdir -p "$OUT"
DEB=$OUT/mien_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
