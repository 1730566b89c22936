#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer + AddressSanitizer, nightly Rust) of what mien reads from
# outside: profiles (config), replayed image files (replay_decode), raw V4L2 buffers of each pixel format at
# any size (v4l2_buffer), the spool directory after anything (spool_recovery), the label message (label_codec).
# The checks are fuzz/checks.rs; tests/fuzz_regressions.rs replays fuzz/regressions/ on stable in every test run.
#
# usage: scripts/fuzz.sh [SECONDS per target, default 600] [TARGET...]
#   FUZZ_JOBS=2 runs two targets at a time. FUZZ_DEV=1 builds without optimisation (debug assertions and overflow
#   checks on): a clean build takes about 5 minutes instead of 20-30, so CI's short smoke uses it; runs of
#   minutes use the default optimised build, which executes several times faster. Prints executions, coverage and crashes per target; a crash input is
#   copied to fuzz/regressions/<target>/ (commit it with the fix) and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config replay_decode v4l2_buffer spool_recovery label_codec)
JOBS=${FUZZ_JOBS:-1}
command -v rustup >/dev/null || { echo "fuzz: needs rustup (scripts/setup.sh)" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --version 0.13.2 --locked
# Optimised (as the firmware ships) unless FUZZ_DEV=1, with AddressSanitizer; fuzz/checks.rs asserts the invariants.
MODE=-O; [ "${FUZZ_DEV:-0}" = 1 ] && MODE=--dev
cargo +nightly fuzz build $MODE
LOG=fuzz/artifacts/logs; mkdir -p "$LOG"

seeds() { # seed inputs per target, from the repository (the corpus grows under fuzz/corpus/, ignored by git)
    local d=fuzz/corpus/$1; mkdir -p "$d"
    case $1 in
        config) cp boards/*.toml "$d/" ;;
        replay_decode) cp samples/clip/frame_000[0-3].jpg "$d/" ;;
    esac
    echo "$d"
}
maxlen() { case $1 in replay_decode) echo 200000 ;; spool_recovery) echo 8192 ;; *) echo 4096 ;; esac; }

run() {
    local t=$1 corpus; corpus=$(seeds "$t")
    rm -rf "fuzz/artifacts/$t"   # this run's findings only (kept ones are in fuzz/regressions/)
    cargo +nightly fuzz run $MODE "$t" "$corpus" -- -max_total_time="$SECS" -max_len="$(maxlen "$t")" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 > "$LOG/$t.log" 2>&1 || true
}
running=0
for t in "${TARGETS[@]}"; do
    run "$t" & running=$((running + 1))
    if [ $running -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

fail=0
printf '%-16s %12s %10s %8s %8s  %s\n' target executions exec/s cov corpus crashes
for t in "${TARGETS[@]}"; do
    l=$LOG/$t.log
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$l" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$l" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$l" | tail -1 | grep -o '[0-9]*' || echo "?")
    corp=$(ls "fuzz/corpus/$t" | wc -l)
    crashes=()
    for c in fuzz/artifacts/"$t"/crash-* fuzz/artifacts/"$t"/oom-* fuzz/artifacts/"$t"/timeout-* fuzz/artifacts/"$t"/leak-*; do
        [ -e "$c" ] || continue
        mkdir -p "fuzz/regressions/$t"; cp "$c" "fuzz/regressions/$t/"; crashes+=("$(basename "$c")")
    done
    printf '%-16s %12s %10s %8s %8s  %s\n' "$t" "$runs" "$rate" "$cov" "$corp" "${#crashes[@]} ${crashes[*]:-}"
    if [ ${#crashes[@]} -gt 0 ] || ! grep -q 'Done [0-9]* runs' "$l"; then
        fail=1; echo "  $t: see $l" >&2; grep -m3 -E 'panicked|ERROR|SUMMARY' "$l" >&2 || true
    fi
done
exit $fail
