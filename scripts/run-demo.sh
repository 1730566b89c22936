#!/usr/bin/env bash
# The main job on the embedded default: the bundled models on the bundled sample clip, labels printed.
# Extra arguments go to `mien run` (e.g. --save-blurred /tmp/blurred).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
cargo build --release --quiet
exec target/release/mien run "$@"
