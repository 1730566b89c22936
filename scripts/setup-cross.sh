#!/usr/bin/env bash
# Cross-build set-up for the plain-cargo route (.cargo/config.toml): Debian's cross compilers, the target's
# kernel headers (bindgen for the v4l crate), qemu-user to run the tests, and the rustup targets.
# usage: setup-cross.sh [aarch64] [armv7]      (default: aarch64)
set -euo pipefail
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
pkgs=(qemu-user) targets=()
for t in "${@:-aarch64}"; do
    case $t in
        aarch64) pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross)
                 targets+=(aarch64-unknown-linux-gnu aarch64-unknown-linux-musl);;
        armv7)   pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross linux-libc-dev-armhf-cross)
                 targets+=(armv7-unknown-linux-gnueabihf);;
        *) echo "setup-cross: unknown target family $t (aarch64, armv7)" >&2; exit 2;;
    esac
done
need=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target add "${targets[@]}" >/dev/null 2>&1 || rustup target add "${targets[@]}"
echo "setup-cross: ok (${targets[*]})"
