#!/usr/bin/env bash
# Boot the test guest with SHARE_DIR as /mnt/host (virtio-9p) and run SHARE_DIR/test.sh inside it.
# Extra host files (e.g. the mien binary and its glibc libraries) go into an overlay initramfs.
# usage: run.sh [-a amd64] [-t TIMEOUT] [-x HOST_FILE:GUEST_PATH]... SHARE_DIR
# exit status: the test's, or 125 when the guest never reported one.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ARCH=amd64 TIMEOUT=300 EXTRA=()
while getopts "a:t:x:" o; do case $o in a) ARCH=$OPTARG;; t) TIMEOUT=$OPTARG;; x) EXTRA+=("$OPTARG");; *) exit 2;; esac; done
shift $((OPTIND-1))
SHARE=$(realpath "$1")
OUT=$HERE/work/$ARCH/out
[ -f "$OUT/initramfs.cpio.gz" ] || "$HERE/build.sh" "$ARCH" >&2
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/root"
for e in "${EXTRA[@]}"; do
    src=${e%%:*} dst=${e#*:}
    mkdir -p "$WORK/root$(dirname "$dst")"; cp -L "$src" "$WORK/root$dst"; chmod +x "$WORK/root$dst"
done
(cd "$WORK/root" && find . -mindepth 1 | cpio -o -H newc --quiet) | gzip -1 > "$WORK/overlay.cpio.gz"
cat "$OUT/initramfs.cpio.gz" "$WORK/overlay.cpio.gz" > "$WORK/initrd.cpio.gz"
case $ARCH in
  # qemu64 (SSE2): tract picks its SSE kernels; with -cpu max it picks AVX-512 ones, which TCG runs 10x slower.
  amd64) QEMU=(qemu-system-x86_64 -machine q35,accel=tcg -cpu "${QEMU_CPU:-qemu64}" -smp 2 -m 1024); CONSOLE=ttyS0;;
  # arm64: a Cortex-A72, the Raspberry Pi 4's core (NEON, no SVE), so tract picks the kernels a Pi 4 runs.
  arm64) QEMU=(qemu-system-aarch64 -machine virt -cpu "${QEMU_CPU:-cortex-a72}" -smp 2 -m 1024); CONSOLE=ttyAMA0;;
esac
QEMU+=(-nographic -no-reboot -kernel "$OUT/kernel" -initrd "$WORK/initrd.cpio.gz"
       -append "console=$CONSOLE quiet panic=-1"
       -virtfs "local,path=$SHARE,mount_tag=host0,security_model=none,id=host0")
set +e
timeout "$TIMEOUT" "${QEMU[@]}" < /dev/null > "$WORK/console.log" 2>&1
qrc=$?
set -e
cp "$WORK/console.log" "$SHARE/console.log"
rc=$(sed -n 's/.*MIEN_GUEST_EXIT=\([0-9]*\).*/\1/p' "$WORK/console.log" | tail -1)
if [ -z "$rc" ]; then echo "guest: no exit marker (qemu rc=$qrc); console in $SHARE/console.log" >&2; exit 125; fi
exit "$rc"
