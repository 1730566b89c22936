#!/usr/bin/env bash
# Teachers, their ensemble's view bank and students from it, all in one call on a lent GPU (round twelve's second
# call; models/README.md, "Round twelve"): round11.sh's phases a and b in one call, without its ContraWarping run.
# NT width-32 teachers (default 3) train from scratch side by side in bf16 for as many of 40 epochs as --budget TB
# fits; each is returned as fp16 ($OUT/tN.pt, 5.5 MB). Then each student of STUDENTS (widths, side by side) is
# distilled from the ensemble of the shipped teacher and those teachers, from scratch, in bf16, on its own
# BANK-view bank, for as many of 200 epochs as --budget SB fits, and returned in $OUT/students.tar (sW/student.pt).
#   here:   python models/expression/gpu/pack.py pack ../shared/data/ferplus .gpu/pack     (.gpu carried)
#   there:  TB=160 SB=60 models/expression/gpu/round12b.sh $OUT            # as run: one width-32 student, timed
#           TB=160 SB=300 STUDENTS="16 24 32" models/expression/gpu/round12b.sh $OUT   # the next lease's round
#   dry run on a CPU (2 min): NT=1 TB=60 SB=20 BANK=2 BS=64 EXTRA="--limit 600" .../round12b.sh /tmp/out
#   here, after: `recipe.py teachers --teachers T.pt,t1.pt,t2.pt,t3.pt` (T.pt: gpu/from_onnx.py teacher
#   models/mien_teacher_fp32.onnx T.pt), `recipe.py export --work W --out W/out` for each student (val only).
# On the H200 (2026-12-04), TB=160: unpacking and the three teachers 176 s (38-40 epochs, 2.0-3.7 s an epoch side by
# side), the ensemble's 64-view bank 32 s, a width-32 student 0.6-0.7 s an epoch alone.
set -u
OUT=${1:?usage: round12b.sh OUTDIR}
T="--scratch --width 32 --epochs 40 --bs ${BS:-256} --bf16"
TS=""; for s in $(seq 1 "${NT:-3}"); do TS="$TS${TS:+;}t$s:$T --seed $s"; done
AS=""; for w in ${STUDENTS:-32}; do AS="$AS${AS:+;}s$w:--width $w --seed 0 --bf16"; done
SSL=0 TEACHERS="$TS" ARMS="$AS" BUDGET_A=${TB:-160} BUDGET_B=${SB:-60} \
    exec "$(dirname "$0")/round11.sh" .gpu "$OUT" ab
