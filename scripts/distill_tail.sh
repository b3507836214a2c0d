#!/usr/bin/env bash
# Distillation against teacher data with and without tail samples: tinystories-3M (f32 reference)
# with block 2 of 4 dropped, trained on tinystories-calib.txt at ctx 128, the held-out KL
# measured exactly (the whole 512-token vocabulary kept: --top-k 512 --max-rest 0) on 64 chunks
# of tinystories-eval.txt. Prints the training curves (step, seconds, train KL, held-out KL) of
# both runs side by side.
#   scripts/distill_tail.sh [STEPS] [THREADS] [LR]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-$(cd .. && pwd)/shared}
STEPS=${1:-150}
THREADS=${2:-2}
LR=${3:-5e-4}
SMELT=target/release/smelt
cargo build --release -q
W=${WORK:-/tmp/smelt-distill-tail}
mkdir -p "$W"
T="$SHARED/reference/tinystories-3M/tinystories-3M-f32.gguf"
TXT="$SHARED/assets/text"
[ -f "$W/pruned.gguf" ] || $SMELT prune --method depth --layers 2 "$T" "$W/pruned.gguf" >/dev/null
[ -f "$W/heldout.sdd" ] || $SMELT distill dataset "$T" -f "$TXT/tinystories-eval.txt" -c 128 \
  --chunks 64 --top-k 512 --max-rest 0 --tail-samples 0 -o "$W/heldout.sdd" >/dev/null 2>&1
for tail in 0 1024; do
  [ -f "$W/calib-$tail.sdd" ] || $SMELT distill dataset "$T" -f "$TXT/tinystories-calib.txt" -c 128 \
    --tail-samples $tail -o "$W/calib-$tail.sdd" >/dev/null 2>&1
  echo "teacher data --tail-samples $tail: $(stat -c %s "$W/calib-$tail.sdd") bytes"
  rm -f "$W/student-$tail.gguf" "$W/student-$tail.gguf.ckpt"
  $SMELT distill train --teacher-data "$W/calib-$tail.sdd" --student "$W/pruned.gguf" \
    -o "$W/student-$tail.gguf" --steps "$STEPS" --batch 8 --lr "$LR" --eval-data "$W/heldout.sdd" \
    --eval-every 25 --eval-chunks 64 -t "$THREADS" --json 2>/dev/null |
    jq -r '.curve[] | select(.heldout_kl != null) | "\(.step) \(.seconds) \(.train_kl) \(.heldout_kl)"' >"$W/curve-$tail.txt"
done
echo "step | s (lumped) | train KL | held-out KL | s (tail) | train KL | held-out KL"
join "$W/curve-0.txt" "$W/curve-1024.txt" |
  awk '{ printf "%d | %.0f | %.4f | %.4f | %.0f | %.4f | %.4f\n", $1, $2, $3, $4, $5, $6, $7 }'
