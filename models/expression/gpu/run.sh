#!/usr/bin/env bash
# The shipped recipe's training stages on a lent GPU (`train.sh all` without export, which runs at home).
#   here:  python models/expression/gpu/pack.py pack ../shared/data/ferplus .gpu   (and send the repo + .gpu)
#   there: models/expression/gpu/run.sh .gpu OUTDIR       (python3 with torch, numpy, tqdm; ~15 min on one H200)
#   here:  copy OUTDIR/*.pt to models/expression/work/, then `train.sh export` (and `train.sh ablation --resume`
#          with OUTDIR/ck/ablation_* in work/ckpt: the test rows stay here, so the ablation reports test here).
# The SSL runs go side by side (they are independent); the student (200 epochs of 256) waits for the teacher.
set -u
PACK=${1:?usage: run.sh PACKDIR OUTDIR}; OUT=${2:?usage: run.sh PACKDIR OUTDIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/ck"
python3 "$HERE/gpu/pack.py" unpack "$PACK" /tmp/fer || exit 1
R="python3 $HERE/recipe.py --data /tmp/fer --work /tmp/w --threads 4"
T0=$(date +%s)
( $R ssl --arch teacher > "$OUT/p1.log" 2>&1 && $R teacher >> "$OUT/p1.log" 2>&1 ) &
P1=$!
( $R ssl --arch student > "$OUT/p2.log" 2>&1 ) &
P2=$!
wait $P1 $P2
[ -f /tmp/w/teacher.pt ] && [ -f /tmp/w/ssl_student.pt ] || { echo "run.sh: a stage failed, see $OUT/p*.log"; exit 1; }
$R student >> "$OUT/p2.log" 2>&1 || { echo "run.sh: student failed"; exit 1; }
$R ablation >> "$OUT/p2.log" 2>&1 || echo "run.sh: ablation failed (the model is still usable)"
cp /tmp/w/ssl_teacher.pt /tmp/w/ssl_student.pt /tmp/w/teacher.pt /tmp/w/student.pt "$OUT/"
cp /tmp/w/ckpt/ablation_* "$OUT/ck/" 2>/dev/null
echo "run.sh: done in $(( $(date +%s) - T0 )) s"
