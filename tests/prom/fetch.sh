#!/usr/bin/env bash
# The Prometheus tools tests/metrics.rs checks mien's metrics with: promtool (Prometheus's own parser and
# linter, `promtool check metrics`) and node_exporter (its textfile collector reads mien's .prom file).
# Downloads Debian's .debs with apt-get download and unpacks the two binaries; nothing is installed on the
# host and no service starts. Output: tests/prom/work/bin/{promtool,node_exporter}. Idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
W=$HERE/work
BIN=$W/bin
[ -x "$BIN/promtool" ] && [ -x "$BIN/node_exporter" ] && { echo "prom tools: already in $BIN"; exit 0; }
mkdir -p "$W/debs" "$BIN"
cd "$W/debs"
for p in prometheus prometheus-node-exporter; do
    ls "${p}"_*.deb >/dev/null 2>&1 && continue
    apt-get download "$p" 2>&1 | grep -v unsandboxed || true
    if ! ls "${p}"_*.deb >/dev/null 2>&1; then
        SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        apt-get download "$p" 2>&1 | grep -v unsandboxed || true
    fi
    ls "${p}"_*.deb >/dev/null 2>&1 || { echo "cannot download $p" >&2; exit 1; }
done
rm -rf "$W/root"
for f in prometheus_*.deb prometheus-node-exporter_*.deb; do dpkg -x "$f" "$W/root"; done
install -m755 "$W/root/usr/bin/promtool" "$BIN/promtool"
install -m755 "$W/root/usr/bin/prometheus-node-exporter" "$BIN/node_exporter"
rm -rf "$W/root"
echo "prom tools: $("$BIN/promtool" --version 2>&1 | head -1); $("$BIN/node_exporter" --version 2>&1 | head -1)"
