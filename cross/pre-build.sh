#!/bin/sh
# Runs inside a cross-rs image before the build: bindgen (v4l crate) needs libclang and the kernel's V4L2
# headers for the target. cross-rs images are Ubuntu-based and run this as root.
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libclang-dev clang >/dev/null
