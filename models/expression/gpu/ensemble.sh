#!/usr/bin/env bash
# Round two on a lent GPU: four more teachers for an ensemble, then students of three widths distilled from it.
# Every stage runs under --budget, so the whole script fits one lease (about 8 minutes on one H200).
#   here:  python models/expression/gpu/pack.py pack ../shared/data/ferplus DIR/pack
#          python models/expression/gpu/half.py models/expression/work/ssl_teacher.pt DIR/ssl_teacher.pt  (same for
#          ssl_student.pt): the first round's ContraWarping encoders, halved to fit the 64 MiB the machine receives
#   there: models/expression/gpu/ensemble.sh DIR OUTDIR      (python3 with torch, numpy, tqdm)
#   here:  untar OUTDIR/*.tar into a work dir (tN/teacher.pt, sW/student.pt); `recipe.py teachers --teachers ...`
#          reports each teacher and the ensemble on val and test; `recipe.py export --work sW --out SCRATCH` (with a
#          teacher.pt in sW) makes each student's ONNX files to compare (models/README.md, "Round two").
# Teachers: t1, t2 = the SSL teacher fine-tuned with seeds 1, 2; t3, t4 = wider ResNets (32, 48) from scratch.
# Students: width 16 from the first round's SSL student, widths 20 and 24 from their own SSL runs (phase A).
set -u
IN=${1:?usage: ensemble.sh DIR OUTDIR}; OUT=${2:?usage: ensemble.sh DIR OUTDIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
A=${BUDGET_A:-190}; B=${BUDGET_B:-220}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" /tmp/logs
T0=$(date +%s)
python3 "$HERE/gpu/pack.py" unpack "$IN/pack" /tmp/fer || exit 1
R="python3 $HERE/recipe.py --data /tmp/fer --threads 2 ${EXTRA:-}"  # EXTRA: e.g. "--limit 600 --bs 16" for a dry run
teach() {
    local d=/tmp/$1; shift
    mkdir -p "$d" && cp "$IN/ssl_teacher.pt" "$d/"
    timeout $((A + 60)) $R teacher --work "$d" --budget "$A" "$@" > "/tmp/logs/$(basename "$d").log" 2>&1
}
teach t1 --seed 1 &
teach t2 --seed 2 &
teach t3 --seed 3 --scratch --width 32 &
teach t4 --seed 4 --scratch --width 48 &
for w in 20 24; do
    ( mkdir -p /tmp/s$w && timeout $((A + 60)) $R ssl --arch student --width $w --work /tmp/s$w --budget $((A - 30)) \
        > /tmp/logs/ssl$w.log 2>&1 ) &
done
wait
echo "phase A (teachers, SSL students) done at $(( $(date +%s) - T0 )) s"
TS=$(ls /tmp/t?/teacher.pt | paste -sd,)
echo "teachers: $TS"
mkdir -p /tmp/s16 && cp "$IN/ssl_student.pt" /tmp/s16/
for w in 16 20 24; do
    ( timeout $((B + 60)) $R student --work /tmp/s$w --width $w --teachers "$TS" --epochs 100 --budget "$B" \
        > /tmp/logs/student$w.log 2>&1 ) &
done
wait
echo "phase B (students) done at $(( $(date +%s) - T0 )) s"
cd /tmp
tar cf "$OUT/teachers_w24.tar" t1/teacher.pt t2/teacher.pt
[ -f t3/teacher.pt ] && python3 "$HERE/gpu/half.py" t3/teacher.pt "$OUT/teacher_t3_w32.pt"
[ -f t4/teacher.pt ] && python3 "$HERE/gpu/half.py" t4/teacher.pt "$OUT/teacher_t4_w48.pt"
tar cf "$OUT/students.tar" s*/student.pt s*/ssl_student.pt
tar czf "$OUT/logs.tgz" logs
grep -ah "budget\|best val\|ensemble\|(width\|Error\|error" /tmp/logs/*.log | grep -v "%|" | cut -c1-220
echo "ensemble.sh: done in $(( $(date +%s) - T0 )) s"
