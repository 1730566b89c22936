#!/usr/bin/env bash
# Teachers, their ensemble's view bank and students from it, all in one call on a lent GPU (round twelve's second
# call; models/README.md, "Round twelve"). Three width-32 teachers train from scratch side by side in bf16 for as
# many of 40 epochs as --budget TB fits; each is returned as fp16 ($OUT/tN.pt, 5.5 MB). Then each student of
# STUDENTS (widths, side by side) is distilled from the ensemble of the shipped teacher and the three, from scratch,
# on its own BANK-view bank, for as many of 200 epochs as --budget SB fits, and returned in $OUT/students.tar.
#   here:   python models/expression/gpu/pack.py pack ../shared/data/ferplus .gpu/pack     (.gpu carried)
#   there:  TB=160 SB=60 models/expression/gpu/round12b.sh $OUT            # as run: one width-32 student, timed
#           TB=160 SB=300 STUDENTS="16 24 32" models/expression/gpu/round12b.sh $OUT   # the next lease's round
#   dry run on a CPU (1.5 min): NT=1 TB=60 SB=20 BANK=2 BS=64 EXTRA="--limit 600" .../round12b.sh /tmp/out
#   here, after: `recipe.py teachers --teachers T.pt,t1.pt,t2.pt,t3.pt` (T.pt: gpu/from_onnx.py teacher
#   models/mien_teacher_fp32.onnx T.pt), `recipe.py export --work W --out W/out` for each student (val only).
# On the H200 (2026-12-04), TB=160: unpacking and the three teachers 176 s (38-40 epochs, 2.0-3.7 s an epoch side by
# side), the ensemble's 64-view bank 32 s, a width-32 student 0.6-0.7 s an epoch alone.
set -u
OUT=${1:?usage: round12b.sh OUTDIR}; TB=${TB:-160}; SB=${SB:-60}; X=${EXTRA:-}
H=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1; T0=$(date +%s); mkdir -p /tmp/logs "$OUT"
[ -f /tmp/fer/images.u8 ] || python3 "$H/gpu/pack.py" unpack .gpu/pack /tmp/fer || exit 1
[ -f /tmp/teacher.pt ] || python3 "$H/gpu/from_onnx.py" teacher "$H/../mien_teacher_fp32.onnx" /tmp/teacher.pt || exit 1
R="python3 $H/recipe.py --data /tmp/fer --threads 2 $X"  # EXTRA: "--limit 600" for a dry run
for s in $(seq 1 "${NT:-3}"); do
    # the timeouts only guard against a hang: --budget ends each stage
    timeout $((TB + 45)) $R teacher --work "/tmp/t$s" --scratch --width 32 --epochs 40 --bs "${BS:-256}" --seed "$s" \
        --bf16 --budget "$TB" > "/tmp/logs/t$s.log" 2>&1 &
done
wait
echo "teachers done at $(( $(date +%s) - T0 )) s"
M=/tmp/teacher.pt
for s in $(seq 1 "${NT:-3}"); do
    f=/tmp/t$s/teacher.pt
    [ -f "$f" ] || { [ -f "/tmp/t$s/ckpt/teacher.pt" ] && python3 "$H/gpu/best_of.py" "/tmp/t$s/ckpt/teacher.pt" "$f"; }
    [ -f "$f" ] && python3 "$H/gpu/half.py" "$f" "$OUT/t$s.pt" && M="$M,$f"
    grep -ah "budget\|best val\|Error" "/tmp/logs/t$s.log" | grep -v "%|" | cut -c1-200 | sed "s/^/t$s: /"
done
for w in ${STUDENTS:-32}; do
    timeout $((SB + 60)) $R student --work "/tmp/s$w" --scratch --width "$w" --epochs 200 --bs "${BS:-256}" \
        --bank "${BANK:-64}" --bf16 --teachers "$M" --budget "$SB" > "/tmp/logs/s$w.log" 2>&1 &
done
wait
cd /tmp || exit 1
FILES=()
for w in ${STUDENTS:-32}; do
    [ -f "s$w/student.pt" ] || { [ -f "s$w/ckpt/student.pt" ] \
        && python3 "$H/gpu/best_of.py" "s$w/ckpt/student.pt" "s$w/student.pt"; }
    [ -f "s$w/student.pt" ] && FILES+=("s$w/student.pt")
    grep -ah "(width [0-9]*): val\|^ensemble of\|budget\|view bank:\|best val\|Error" "logs/s$w.log" | grep -v "%|" \
        | cut -c1-200 | sed "s/^/s$w: /"
done
[ ${#FILES[@]} -gt 0 ] && tar cf "$OUT/students.tar" "${FILES[@]}"
tar czf "$OUT/logs.tgz" -C /tmp logs
echo "round12b.sh: done in $(( $(date +%s) - T0 )) s"
