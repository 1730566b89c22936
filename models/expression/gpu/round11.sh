#!/usr/bin/env bash
# Round eleven on a lent GPU: a stronger teacher, then long student schedules distilled from it. Rounds two and four
# left this as the way on to 86% (models/README.md, "Targets"): an ensemble of teachers read 85.5% on FER+ test with
# members trained 18-35 epochs, and the student trails its teacher by 0.7 point. A lease's command runs 10 minutes
# at most, so the round is two calls on one warm machine (it stays warm 30 s after a call: make the second at once):
#   here:  python models/expression/gpu/pack.py pack ../shared/data/ferplus .gpu/pack        (.gpu carried)
#   there: models/expression/gpu/round11.sh .gpu $OUT a      # teachers (TEACHERS) + the SSL student encoder, ~5 min
#          models/expression/gpu/round11.sh .gpu $OUT b      # students (ARMS) from the ensemble, ~6 min
#   (with a machine start of 1-2 minutes that is about 13 of a lease's 15 minutes: run a with timeout_s 420 and b
#   with 480 at once after it, then give the machine back)
#   If the machine went back between the calls, copy what call a returned (its *.pt files) into .gpu/round11/
#   here and carry .gpu again: call b starts from those.
#   dry run of the mechanics on a CPU (2 minutes a call): TEACHERS="t8:--scratch --width 8 --seed 1" EXTRA="--limit 600"
#   BUDGET_A=60 BUDGET_B=90 BANK=2 BS=64 round11.sh .gpu /tmp/out a (then b)
#   here:  `recipe.py teachers --teachers ...` for the teachers on val and test, `recipe.py export --work W --out D`
#          for each student (the student alone where W has no teacher.pt), `mien eval` on the files (models/README.md,
#          "Round eleven").
# Call a trains TEACHERS side by side ("NAME:OPTIONS;..."; default: three width-32 teachers from scratch at seeds 1-3,
# up to 60 epochs of batches of 256 as --budget fits) and ContraWarping for the width-16 student encoder beside them.
# Call b distils each student of ARMS from the ensemble of the shipped teacher and call a's teachers, 200 epochs
# of batches of 256 on a view bank (`student --bank`): 64 augmented views of each face with the ensemble's
# probabilities on them, computed once, so the four teachers' forward passes are not paid at every step. The
# default arms: the ensemble at seeds 0 and 1, and the shipped teacher alone on the same bank (seed 0), which
# reads the bank's cost against round four's shipped student (the same teacher and schedule on fresh views).
# Each stage's --budget re-fits its schedule after every epoch, so stages sharing the GPU still end in time.
# Phase ab runs a then b in one call (round twelve's, through gpu/round12b.sh); SSL=0 leaves out call a's
# ContraWarping run, so the students of call b train from scratch.
set -u
U="usage: round11.sh DIR OUTDIR a|b|ab"
IN=${1:?$U}; OUT=${2:?$U}; PHASE=${3:?$U}
case $PHASE in a|b|ab) ;; *) echo "$U" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
A=${BUDGET_A:-240}; B=${BUDGET_B:-330}
T32="--scratch --width 32 --epochs 60 --bs 256"
TEACHERS=${TEACHERS:-"t32a:$T32 --seed 1;t32b:$T32 --seed 2;t32c:$T32 --seed 3"}
ARMS=${ARMS:-"e0:--seed 0;e1:--seed 1;s0:--seed 0 --teachers /tmp/teacher.pt"}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" /tmp/logs
T0=$(date +%s)
# Both calls: the faces and the shipped teacher (rebuilt from its ONNX file, checked against onnxruntime).
[ -f /tmp/fer/images.u8 ] || python3 "$HERE/gpu/pack.py" unpack "$IN/pack" /tmp/fer || exit 1
[ -f /tmp/teacher.pt ] || python3 "$HERE/gpu/from_onnx.py" teacher "$HERE/../mien_teacher_fp32.onnx" /tmp/teacher.pt || exit 1
R="python3 $HERE/recipe.py --data /tmp/fer --threads 2 ${EXTRA:-}"  # EXTRA: e.g. "--limit 600" for a dry run
names() { local s n=(); IFS=';' read -ra s <<< "$1"; for x in "${s[@]}"; do n+=("${x%%:*}"); done; echo "${n[@]}"; }
opts() { local s; IFS=';' read -ra s <<< "$1"; for x in "${s[@]}"; do [ "${x%%:*}" = "$2" ] && echo "${x#*:}"; done; }

if [ "$PHASE" != b ]; then
    mkdir -p /tmp/ssl
    # The timeouts only guard against a hang: --budget ends each stage (start-up and the last epoch come on top).
    [ "${SSL:-1}" = 0 ] ||
        timeout $((A + 90)) $R ssl --arch student --work /tmp/ssl --budget "$A" > /tmp/logs/ssl.log 2>&1 &
    for n in $(names "$TEACHERS"); do
        mkdir -p "/tmp/$n"
        # shellcheck disable=SC2046
        timeout $((A + 90)) $R teacher --work "/tmp/$n" --budget "$A" $(opts "$TEACHERS" "$n") > "/tmp/logs/$n.log" 2>&1 &
    done
    wait
    echo "call a done at $(( $(date +%s) - T0 )) s"
    for n in $(names "$TEACHERS"); do
        f=/tmp/$n/teacher.pt
        [ -f "$f" ] || { [ -f "/tmp/$n/ckpt/teacher.pt" ] && python3 "$HERE/gpu/best_of.py" "/tmp/$n/ckpt/teacher.pt" "$f"; }
        # fp16 for the trip back (a width-32 teacher is 11 MB as fp32); the copy kept here for call b stays fp32
        if [ -f "$f" ]; then python3 "$HERE/gpu/half.py" "$f" "$OUT/$n.pt"; else echo "round11.sh: $n left no teacher"; fi
    done
    [ "${SSL:-1}" != 0 ] && [ -f /tmp/ssl/ssl_student.pt ] && cp /tmp/ssl/ssl_student.pt "$OUT/"
    grep -ah "budget\|best val\|ssl\[\|Error\|error" /tmp/logs/*.log | grep -v "%|" | cut -c1-220
fi
if [ "$PHASE" != a ]; then
    # Call b: call a's files from this machine's /tmp, or carried back in DIR/round11 if the machine was new.
    MEMBERS=/tmp/teacher.pt
    for n in $(names "$TEACHERS"); do
        [ -f "/tmp/$n/teacher.pt" ] || { [ -f "$IN/round11/$n.pt" ] && mkdir -p "/tmp/$n" && cp "$IN/round11/$n.pt" "/tmp/$n/teacher.pt"; }
        if [ -f "/tmp/$n/teacher.pt" ]; then MEMBERS="$MEMBERS,/tmp/$n/teacher.pt"; else echo "round11.sh: no teacher $n"; fi
    done
    # SSL=0: from scratch even where an earlier call left an SSL encoder in /tmp/ssl or DIR/round11.
    INIT="--scratch"
    if [ "${SSL:-1}" != 0 ]; then
        [ -f /tmp/ssl/ssl_student.pt ] || { [ -f "$IN/round11/ssl_student.pt" ] && mkdir -p /tmp/ssl && cp "$IN/round11/ssl_student.pt" /tmp/ssl/; }
        if [ -f /tmp/ssl/ssl_student.pt ]; then INIT=""; else echo "round11.sh: no SSL student encoder: the students train from scratch" >&2; fi
    fi
    echo "ensemble: $MEMBERS"
    for n in $(names "$ARMS"); do
        d=/tmp/$n
        mkdir -p "$d"
        [ -z "$INIT" ] && cp /tmp/ssl/ssl_student.pt "$d/"
        # shellcheck disable=SC2046
        timeout $((B + 90)) $R student --work "$d" --epochs 200 --bs "${BS:-256}" --bank "${BANK:-64}" --budget "$B" \
            $INIT --teachers "$MEMBERS" $(opts "$ARMS" "$n") > "/tmp/logs/$n.log" 2>&1 &
    done
    wait
    echo "call b done at $(( $(date +%s) - T0 )) s"
    cd /tmp || exit 1
    FILES=()
    for n in $(names "$ARMS"); do
        [ -f "$n/student.pt" ] || { [ -f "$n/ckpt/student.pt" ] && python3 "$HERE/gpu/best_of.py" "$n/ckpt/student.pt" "$n/student.pt"; }
        if [ -f "$n/student.pt" ]; then FILES+=("$n/student.pt"); else echo "round11.sh: $n left no student"; fi
    done
    [ ${#FILES[@]} -gt 0 ] && tar cf "$OUT/students.tar" "${FILES[@]}"
    # The members and their ensemble on val: each arm distilling from several reports them as it loads them (not
    # in a --limit dry run).
    for n in $(names "$ARMS"); do grep -ah "(width [0-9]*): val\|^ensemble of" "/tmp/logs/$n.log"; done | sort -u
    for n in $(names "$ARMS"); do
        grep -ah "budget\|view bank:\|best val\|Error\|error" "/tmp/logs/$n.log" | grep -v "%|" | cut -c1-220 | sed "s/^/$n: /"
        echo "$n: $(grep -c 'epoch .*: val' "/tmp/logs/$n.log") epochs"
    done
fi
tar czf "$OUT/logs-$PHASE.tgz" -C /tmp logs
echo "round11.sh $PHASE: done in $(( $(date +%s) - T0 )) s"
