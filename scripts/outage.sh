#!/usr/bin/env bash
# Outages at their real length (not CI): a 10-minute broker outage and a power-cut simulation against a real
# mosquitto, for each fsync policy; reports labels produced, delivered, duplicated and lost, and the spool's
# size over time (examples/outage.rs). About 13 minutes per policy.
# usage: scripts/outage.sh [OUTAGE_SECONDS=600] [KILLS=20]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --bins --examples
for fsync in always interval; do
    target/release/examples/outage --outage-s "${1:-600}" --kills "${2:-20}" --fsync "$fsync"
done
