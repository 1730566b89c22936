#!/usr/bin/env bash
# Round eleven on this 2-core CPU, for the sessions no GPU is lent (models/README.md, "Round eleven"). gpu/round11.sh
# does it in one lease (call a: three width-32 teachers; call b: 200-epoch students from their ensemble with the
# shipped teacher, on a view bank). Here each stage runs one after the other and resumes (`--resume`: a checkpoint
# after every epoch, and each view of the bank kept on disk), so the round spans sessions: run the same line again.
# That needs a machine that keeps WORK between sessions (about 18 hours of stages here in fp32, about half with BF16
# below): both runs so far were lost with their machine within a day (models/README.md, "What happened", "Lost again").
#   models/expression/gpu/round11_cpu.sh WORK teachers   # the teachers WORK lacks (~3.5 h each, both cores; ~2 h bf16)
#   models/expression/gpu/round11_cpu.sh WORK students   # then the students (ARMS) from the ensemble, and export
#   models/expression/gpu/round11_cpu.sh WORK carry DIR  # or: finished teachers (fp16) + the encoder into DIR/round11/,
#                                                        # for a lease that then runs only call b
# TEACHERS and ARMS have round11.sh's names and options, with EPOCHS (default 40, the shipped teacher's schedule)
# in place of the lease's "as many of 60 as --budget fits", and BANK views (default 32 in place of 64: here a view
# of the ensemble costs about 10 minutes, and a bank of one view cost 2 points of accuracy, models/README.md). The
# students start from SSL_STUDENT or WORK/ssl/ssl_student.pt (a width-16 `ssl --arch student` encoder) or, with
# neither, from a ContraWarping run here (~1 h).
# BF16=auto (default) trains with recipe.py --bf16 where the CPU has bfloat16 instructions (avx512_bf16, amx_bf16,
# arm64 bf16): 1.9-2.7x faster steps on the Zen 4 EPYC (models/README.md, "bf16 on this CPU"); BF16=0 keeps fp32,
# BF16=1 insists. Give a stage the same BF16 on every run of it (a bank kept in fp32 is refused under bf16).
set -euo pipefail
USAGE="usage: round11_cpu.sh WORK teachers|students|carry [DIR]"
WORK=${1:?$USAGE}; PHASE=${2:?$USAGE}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${MIEN_MODELS_VENV:-$HERE/../.venv}/bin/python
DATA=${MIEN_FERPLUS:-$HERE/../../../shared/data/ferplus}
T32="--scratch --width 32 --epochs ${EPOCHS:-40} --bs 256"
TEACHERS=${TEACHERS:-"t32a:$T32 --seed 1;t32b:$T32 --seed 2;t32c:$T32 --seed 3"}
ARMS=${ARMS:-"e0:--seed 0"}
IFS=';' read -ra SPECS <<< "$TEACHERS"
IFS=';' read -ra ARMSPECS <<< "$ARMS"
case "${BF16:-auto}" in
    auto) if grep -qwE 'avx512_bf16|amx_bf16|bf16' /proc/cpuinfo 2>/dev/null; then PREC=--bf16; else PREC=; fi ;;
    1) PREC=--bf16 ;;
    0) PREC= ;;
    *) echo "round11_cpu.sh: BF16 is auto, 0 or 1, not $BF16" >&2; exit 2 ;;
esac
# EXTRA: options for every stage, e.g. "--limit 600" for a dry run of the mechanics
# shellcheck disable=SC2086
R() { "$PY" "$HERE/recipe.py" "$@" --data "$DATA" --threads "${THREADS:-2}" $PREC ${EXTRA:-}; }
# The work is in a function called on the script's last line, so bash has read the whole file before any stage
# starts: the script can be edited (or updated by git) while a stage of many hours runs.
main() {
    mkdir -p "$WORK/logs"
    case "$PHASE" in
    teachers)
        for spec in "${SPECS[@]}"; do
            n=${spec%%:*}
            if [ -f "$WORK/$n/teacher.pt" ]; then echo "$n: done ($WORK/$n/teacher.pt)"; continue; fi
            mkdir -p "$WORK/$n"
            echo "$n: training (log: $WORK/logs/$n.log)"
            # shellcheck disable=SC2086
            R teacher --work "$WORK/$n" --resume ${spec#*:} >> "$WORK/logs/$n.log" 2>&1
            grep -a "best val" "$WORK/logs/$n.log" | tail -1
        done ;;
    students)
        # The ensemble: the shipped teacher (rebuilt from its ONNX file and checked against onnxruntime) and every
        # teacher trained above; an unfinished one is left out, with a word.
        [ -f "$WORK/teacher.pt" ] || "$PY" "$HERE/gpu/from_onnx.py" teacher "$HERE/../mien_teacher_fp32.onnx" "$WORK/teacher.pt"
        MEMBERS=$WORK/teacher.pt
        for spec in "${SPECS[@]}"; do
            n=${spec%%:*}
            if [ -f "$WORK/$n/teacher.pt" ]; then MEMBERS="$MEMBERS,$WORK/$n/teacher.pt"
            else echo "round11_cpu.sh: $n is not trained yet: the ensemble is without it" >&2; fi
        done
        SSL=${SSL_STUDENT:-$WORK/ssl/ssl_student.pt}
        if [ ! -f "$SSL" ]; then
            echo "ssl: ContraWarping for the width-16 student encoder (log: $WORK/logs/ssl.log)"
            R ssl --arch student --work "$WORK/ssl" --resume >> "$WORK/logs/ssl.log" 2>&1
            SSL=$WORK/ssl/ssl_student.pt
        fi
        echo "ensemble: $MEMBERS"
        for spec in "${ARMSPECS[@]}"; do
            n=${spec%%:*}
            if [ -f "$WORK/$n/export.json" ]; then echo "$n: done ($WORK/$n/out)"; continue; fi  # export writes it last
            mkdir -p "$WORK/$n"
            cp "$SSL" "$WORK/$n/ssl_student.pt"
            echo "$n: training (log: $WORK/logs/$n.log)"
            if [ ! -f "$WORK/$n/student.pt" ]; then
                # shellcheck disable=SC2086
                R student --work "$WORK/$n" --epochs "${STUDENT_EPOCHS:-200}" --bs 256 --bank "${BANK:-32}" \
                    --teachers "$MEMBERS" --resume ${spec#*:} >> "$WORK/logs/$n.log" 2>&1
            fi
            grep -a "best val" "$WORK/logs/$n.log" | tail -1
            R export --work "$WORK/$n" --out "$WORK/$n/out" >> "$WORK/logs/$n.log" 2>&1
            echo "$n: exported to $WORK/$n/out"
        done ;;
    carry)
        DIR=${3:?usage: round11_cpu.sh WORK carry DIR}
        mkdir -p "$DIR/round11"
        for spec in "${SPECS[@]}"; do
            n=${spec%%:*}
            if [ -f "$WORK/$n/teacher.pt" ]; then "$PY" "$HERE/gpu/half.py" "$WORK/$n/teacher.pt" "$DIR/round11/$n.pt"
            else echo "round11_cpu.sh: $n is not trained yet: call b's ensemble is without it" >&2; fi
        done
        # call b's students start from a width-16 ContraWarping encoder (`ssl --arch student`); without one they train
        # from scratch
        SSL=${SSL_STUDENT:-$WORK/ssl/ssl_student.pt}
        if [ -f "$SSL" ]; then cp "$SSL" "$DIR/round11/ssl_student.pt"; fi
        ls -l "$DIR/round11" ;;
    *)
        echo "round11_cpu.sh: phase is teachers, students or carry, not $PHASE" >&2; exit 2 ;;
    esac
}
main "$@"; exit
