#!/usr/bin/env bash
# Build the V4L2 test guest: Debian's own kernel (with the vivid driver as a module) and a busybox initramfs
# with v4l2-ctl, for qemu-system under TCG. Adapted from ../shared/v4l2-guest (a reference kit).
# Downloads .debs with apt-get download (never installs them on the host); output in tests/guest/work/.
# usage: build.sh [amd64|arm64]      (idempotent: skips what is already built)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ARCH=${1:-amd64}
W=$HERE/work/$ARCH
OUT=$W/out
mkdir -p "$W/debs" "$OUT"
# Bump when the guest's contents change, so that a cached work/ is rebuilt.
GUEST_VERSION=3
[ -f "$OUT/initramfs.cpio.gz" ] && [ -f "$OUT/kernel" ] && [ "$(cat "$OUT/version" 2>/dev/null)" = $GUEST_VERSION ] &&
    { echo "guest $ARCH: already built in $OUT"; exit 0; }

cd "$W/debs"
# A foreign guest (arm64 on an amd64 host) reads its own package lists from a private apt state under work/,
# so the host's dpkg architectures and lists stay as they are.
APT=()
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    APT=(-o "APT::Architecture=$ARCH" -o "APT::Architectures=$ARCH" -o "Dir::State::Lists=$W/apt/lists"
         -o "Dir::Cache=$W/apt/cache" -o "Dir::State::Status=$W/apt/status")
    mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial"; : > "$W/apt/status"
    apt-get "${APT[@]}" update -qq 2>&1 | grep -v unsandboxed || true
fi
KPKG=$(apt-cache "${APT[@]}" depends "linux-image-$ARCH:$ARCH" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
KPKG=${KPKG%%:*}
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-$ARCH (apt-get update?)" >&2; exit 1; }
PKGS="$KPKG busybox-static v4l-utils libv4l-0 libv4lconvert0 libv4l2rds0 libjpeg62-turbo libstdc++6 libgcc-s1 libc6 libudev1"
for p in $PKGS; do
    ls "${p}"_*_"$ARCH".deb >/dev/null 2>&1 || apt-get "${APT[@]}" download "$p:$ARCH" 2>&1 | grep -v unsandboxed || true
done
KROOT=$W/kernel SYSROOT=$W/sysroot
rm -rf "$KROOT" "$SYSROOT"
dpkg -x "${KPKG}"_*_"$ARCH".deb "$KROOT"
for f in *.deb; do case $f in linux-image-*) ;; *) dpkg -x "$f" "$SYSROOT";; esac; done
KVER=$(ls "$KROOT/lib/modules")
depmod -b "$KROOT" "$KVER"

ROOT=$(mktemp -d); trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt/host,lib/modules,etc}
cp "$SYSROOT/bin/busybox" "$ROOT/bin/busybox"; ln -s busybox "$ROOT/bin/sh"
install -m755 "$HERE/init" "$ROOT/init"
# Modules: the dependency closure of vivid, virtio-9p and configfs, flattened, in load order (vivid last, by
# /init). vfb (a real /dev/fb0) and gpio-sim (built here) are loaded by the tests that use them, with options.
: > "$ROOT/lib/modules/order"
TOPS="vivid virtio_pci 9pnet_virtio 9p configfs"
[ "$ARCH" = amd64 ] && TOPS="$TOPS vfb"   # Debian's arm64 kernel has no vfb; the board guest is amd64 only
for top in $TOPS; do
    modprobe -d "$KROOT" -S "$KVER" --show-depends "$top" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    name=$(basename "$ko")
    case "$ko" in *.ko.xz) xz -dc "$ko" > "$ROOT/lib/modules/${name%.xz}"; name=${name%.xz};;
                  *.ko.zst) zstd -qdc "$ko" > "$ROOT/lib/modules/${name%.zst}"; name=${name%.zst};;
                  *) cp "$ko" "$ROOT/lib/modules/$name";; esac
    case $name in vivid.ko|vfb.ko) ;; *) echo "$name" >> "$ROOT/lib/modules/order";; esac
done
if [ "$ARCH" = amd64 ]; then
    "$HERE/build-gpio-sim.sh" "$KVER" "$W/gpio-sim"
    cp "$W/gpio-sim/gpio-sim.ko" "$ROOT/lib/modules/gpio-sim.ko"
fi
# v4l2-ctl and its shared libraries, resolved against the unpacked sysroot.
resolve() { local p=$SYSROOT$1 n=0; while [ -L "$p" ] && [ $n -lt 20 ]; do local t; t=$(readlink "$p"); case $t in /*) p=$SYSROOT$t;; *) p=$(dirname "$p")/$t;; esac; n=$((n+1)); done; echo "$p"; }
copy_with_libs() {
    local f=$1
    [ -e "$ROOT$f" ] && return 0
    mkdir -p "$ROOT$(dirname "$f")"; cp "$(resolve "$f")" "$ROOT$f"
    local interp; interp=$(readelf -l "$SYSROOT$f" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)]/\1/p')
    [ -n "$interp" ] && copy_with_libs "$interp"
    for lib in $(readelf -d "$SYSROOT$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        local p; p=$(cd "$SYSROOT" && ls -d {usr/,}lib/*-linux-gnu/"$lib" {usr/,}lib/"$lib" 2>/dev/null | head -1 || true)
        [ -n "$p" ] || { echo "missing lib $lib for $f" >&2; exit 1; }
        copy_with_libs "/$p"
    done
}
copy_with_libs /usr/bin/v4l2-ctl
# libv4l2's LD_PRELOAD wrapper: the vivid test runs mien under it, as libcamerify runs it for Pi camera modules.
for f in "$SYSROOT"/usr/lib/*/libv4l/v4l2convert.so; do copy_with_libs "${f#"$SYSROOT"}"; done
(cd "$ROOT" && find . | cpio -o -H newc --quiet) | gzip -1 > "$OUT/initramfs.cpio.gz"
if [ "$ARCH" = amd64 ]; then
    # An uncompressed ELF vmlinux boots directly (PVH) and skips the decompressor: ~4 s faster under TCG.
    python3 - "$KROOT/boot/vmlinuz-$KVER" "$OUT/kernel" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
assert i > 0, 'xz payload not found'
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
PY
else
    cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/kernel"
fi
echo $GUEST_VERSION > "$OUT/version"
echo "guest $ARCH: kernel $KVER, initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1) in $OUT"
