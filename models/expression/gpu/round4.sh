#!/usr/bin/env bash
# Round four on a lent GPU: long distillation schedules from the shipped teacher, side by side in one lease.
# Round two found that a longer student schedule (64 epochs against 40) gained on val for both seeds, and the
# checkpoints it started from are gone, so this round starts from what the repository holds.
#   here:  python models/expression/gpu/pack.py pack ../shared/data/ferplus DIR/pack
#   there: models/expression/gpu/round4.sh DIR OUTDIR      (python3 with torch, numpy, tqdm; ~8 minutes on one H200)
#   dry run of the mechanics on a CPU (a few minutes): BS=64 EXTRA="--limit 600" BUDGET_A=10 BUDGET_B=20 round4.sh DIR OUT
#   here:  tar xf OUTDIR/students.tar -C WORK; `recipe.py export --work WORK/sX --out SCRATCH` (with the teacher.pt
#          in WORK/sX) makes each student's ONNX files; `mien eval` reads them (models/README.md, "Round four").
# Phase A: ContraWarping for the width-16 student encoder (the first round's is gone). Phase B: the students in
# ARMS side by side, each distilled from the shipped teacher for as many epochs as --budget fits (at most 200,
# batches of 256), all initialised from phase A's encoder (from scratch, and said so, if phase A left none).
# ARMS is "NAME:OPTIONS;NAME:OPTIONS;..."; the default is the lease that ran (models/README.md, "Round four"):
# with and without the camera effects (--camera 0.5, round eight's open question), at seeds 0 and 1. The probe
# that fits each schedule runs while the other arms start, so it under-reads the step time: in that lease three
# arms fitted 200 epochs, reached 144-147 by the guard below and were finished with `student --resume`.
set -u
IN=${1:?usage: round4.sh DIR OUTDIR}; OUT=${2:?usage: round4.sh DIR OUTDIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
A=${BUDGET_A:-60}; B=${BUDGET_B:-340}
ARMS=${ARMS:-"plain0:--seed 0;plain1:--seed 1;cam0:--seed 0 --camera 0.5;cam1:--seed 1 --camera 0.5"}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" /tmp/logs
T0=$(date +%s)
python3 "$HERE/gpu/pack.py" unpack "$IN/pack" /tmp/fer || exit 1
# The shipped teacher, rebuilt from its ONNX file (checked against onnxruntime): it travels with the repository.
python3 "$HERE/gpu/from_onnx.py" teacher "$HERE/../mien_teacher_fp32.onnx" /tmp/teacher.pt || exit 1
R="python3 $HERE/recipe.py --data /tmp/fer --threads 2 ${EXTRA:-}"  # EXTRA: e.g. "--limit 600" for a dry run
mkdir -p /tmp/ssl
# The timeouts only guard against a hang: --budget already ends each stage (start-up and probing come on top).
timeout $((A + 60)) $R ssl --arch student --work /tmp/ssl --budget "$A" > /tmp/logs/ssl.log 2>&1
INIT=""
if [ -f /tmp/ssl/ssl_student.pt ]; then
    echo "phase A (SSL student encoder) done at $(( $(date +%s) - T0 )) s"
else
    tail -5 /tmp/logs/ssl.log
    echo "round4.sh: phase A left no encoder: the students train from scratch" >&2
    INIT="--scratch"
fi
student() {
    local d=/tmp/$1; shift
    mkdir -p "$d" && cp /tmp/teacher.pt "$d/"
    [ -z "$INIT" ] && cp /tmp/ssl/ssl_student.pt "$d/"
    # shellcheck disable=SC2086
    timeout $((B + 80)) $R student --work "$d" --epochs 200 --bs ${BS:-256} --budget "$B" $INIT "$@" \
        > "/tmp/logs/$(basename "$d").log" 2>&1
}
NAMES=()
IFS=';' read -ra SLOTS <<< "$ARMS"
for slot in "${SLOTS[@]}"; do
    name=${slot%%:*}; NAMES+=("$name")
    # shellcheck disable=SC2086
    student "$name" ${slot#*:} &
done
wait
echo "phase B (students) done at $(( $(date +%s) - T0 )) s"
cd /tmp
FILES=()
[ -f ssl/ssl_student.pt ] && FILES+=(ssl/ssl_student.pt)
for n in "${NAMES[@]}"; do
    if [ -f "$n/student.pt" ]; then FILES+=("$n/student.pt")
    elif [ -f "$n/ckpt/student.pt" ]; then
        # Stopped by the guard: its best epoch so far comes back as a student file (the whole checkpoint, with
        # the optimizer, is 4.7 MB a student: four overran the 16 MiB a returned file may hold). The checkpoint
        # stays on the machine for `student --resume` while it is warm.
        python3 "$HERE/gpu/best_of.py" "$n/ckpt/student.pt" "$n/student.pt" &&
            echo "round4.sh: $n stopped at epoch $(grep -c 'epoch .*: val' "/tmp/logs/$n.log"): its best epoch so far comes back" &&
            FILES+=("$n/student.pt")
    else echo "round4.sh: $n left no student"; fi
done
tar cf "$OUT/students.tar" "${FILES[@]}"
tar czf "$OUT/logs.tgz" logs
grep -ah "budget\|best val\|ssl\[\|Error\|error" /tmp/logs/*.log | grep -v "%|" | cut -c1-220
for n in "${NAMES[@]}"; do echo "$n: $(grep -c 'epoch .*: val' "/tmp/logs/$n.log") epochs"; done
echo "round4.sh: done in $(( $(date +%s) - T0 )) s"
