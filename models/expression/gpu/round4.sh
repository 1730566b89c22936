#!/usr/bin/env bash
# Round four on a lent GPU: the shipped teacher, longer distillation schedules, with and without function matching.
# Round two found that a longer student schedule (64 epochs against 40) gained on val for both seeds, and the
# checkpoints it started from are gone, so this round starts from what the repository holds.
#   here:  python models/expression/gpu/pack.py pack ../shared/data/ferplus DIR/pack
#   there: models/expression/gpu/round4.sh DIR OUTDIR      (python3 with torch, numpy, tqdm; ~8 minutes on one H200)
#   dry run of the mechanics on a CPU (a few minutes): BS=64 EXTRA="--limit 600" BUDGET_A=10 BUDGET_B=20 round4.sh DIR OUT
#   here:  tar xf OUTDIR/students.tar -C WORK; `recipe.py export --work WORK/sX --out SCRATCH` (with the teacher.pt
#          in WORK/sX) makes each student's ONNX files; `mien eval` reads them (models/README.md, "Round four").
# Phase A: ContraWarping for the width-16 student encoder (the first round's is gone). Phase B: four width-16
# students side by side, each distilled from the shipped teacher for as many epochs as --budget fits (at most
# 200, batches of 256), all SSL-initialised: seeds 0 and 1, each plain and with --mixup 0.5 (function matching,
# which Beyer et al. found pays off over long schedules). Two seeds per arm, because on this CPU the seed alone
# moved a 20-epoch run by as much as mixup did (models/README.md, "Round five").
set -u
IN=${1:?usage: round4.sh DIR OUTDIR}; OUT=${2:?usage: round4.sh DIR OUTDIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
A=${BUDGET_A:-80}; B=${BUDGET_B:-330}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" /tmp/logs
T0=$(date +%s)
python3 "$HERE/gpu/pack.py" unpack "$IN/pack" /tmp/fer || exit 1
# The shipped teacher, rebuilt from its ONNX file (checked against onnxruntime): it travels with the repository.
python3 "$HERE/gpu/from_onnx.py" teacher "$HERE/../mien_teacher_fp32.onnx" /tmp/teacher.pt || exit 1
R="python3 $HERE/recipe.py --data /tmp/fer --threads 2 ${EXTRA:-}"  # EXTRA: e.g. "--limit 600" for a dry run
mkdir -p /tmp/ssl
# The timeouts only guard against a hang: --budget already ends each stage (start-up and probing come on top).
timeout $((A + 120)) $R ssl --arch student --work /tmp/ssl --budget "$A" > /tmp/logs/ssl.log 2>&1
[ -f /tmp/ssl/ssl_student.pt ] || { tail -5 /tmp/logs/ssl.log; tar czf "$OUT/logs.tgz" -C /tmp logs; echo "round4.sh: phase A left no encoder" >&2; exit 1; }
echo "phase A (SSL student encoder) done at $(( $(date +%s) - T0 )) s"
student() {
    local d=/tmp/$1; shift
    mkdir -p "$d" && cp /tmp/teacher.pt "$d/"
    cp /tmp/ssl/ssl_student.pt "$d/"
    timeout $((B + 120)) $R student --work "$d" --epochs 200 --bs ${BS:-256} --budget "$B" "$@" \
        > "/tmp/logs/$(basename "$d").log" 2>&1
}
student ssl0 --seed 0 &
student ssl1 --seed 1 &
student mix0 --seed 0 --mixup 0.5 &
student mix1 --seed 1 --mixup 0.5 &
wait
echo "phase B (students) done at $(( $(date +%s) - T0 )) s"
cd /tmp
tar cf "$OUT/students.tar" ssl/ssl_student.pt ssl0/student.pt ssl1/student.pt mix0/student.pt mix1/student.pt
tar czf "$OUT/logs.tgz" logs
grep -ah "budget\|best val\|ssl\[\|Error\|error" /tmp/logs/*.log | grep -v "%|" | cut -c1-220
for f in /tmp/logs/*[01].log; do echo "$f: $(grep -c 'epoch .*: val' "$f") epochs"; done
echo "round4.sh: done in $(( $(date +%s) - T0 )) s"
