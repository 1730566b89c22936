#!/usr/bin/env bash
# Install what building, running and testing mien needs on a fresh Debian (bookworm or newer).
# Idempotent; uses sudo when not root. Only package registries are needed (Debian apt, crates.io, PyPI, npm).
set -euo pipefail
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# build: a C toolchain (tract's kernels, linking), libclang (bindgen for the v4l crate)
# tests: qemu (x86 and arm) + cpio/kmod/xz for the vivid guests, python3-venv for the model scripts, curl for npm tarballs,
#        mosquitto (the tests start their own broker on a loopback port; the packaged service is not used)
for p in build-essential pkg-config libclang-dev python3 python3-venv curl ca-certificates \
         qemu-system-x86 qemu-system-arm cpio kmod xz-utils binutils mosquitto openssl; do
    have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    # Debian's own cargo is too old for tract 0.23 (edition 2024); Debian 13 packages rustup.
    if ! command -v rustup >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustup >/dev/null || {
            echo "setup: no cargo and no rustup package: install Rust >= 1.85 (https://rustup.rs), then rerun" >&2; exit 1; }
    fi
    rustup default stable
fi
echo "setup: ok ($(cargo --version))"
