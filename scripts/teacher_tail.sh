#!/usr/bin/env bash
# How accurately teacher datasets (.sdd) measure KL divergence against the full vocabulary.
#   scripts/teacher_tail.sh MODEL CHUNKS [SETTING...]
# MODEL `real`: Qwen2.5-Coder-0.5B-Instruct (../shared/tools/real-model, 151,936 tokens) as the
# teacher, llama-quantize's Q2_K, Q3_K_M, Q4_K_M and IQ4_XS of it as students, wiki.test.raw at
# ctx 512, the base made by llama-perplexity --kl-divergence-base over CHUNKS chunks.
# MODEL `stories260K` or `tinystories-3M`: the reference f32 teacher, kld-base.bin (40 chunks of
# tinystories-eval.txt; CHUNKS is ignored) and the reference Q4_0, Q2_K, Q4_K_M students.
# Full-vocabulary figures: `smelt perplexity --kld BASE`. Each SETTING (e.g. "--tail-samples 0";
# "" for the defaults) is imported from the base and compared by `smelt distill eval`.
# Prints one line per (setting, student): bytes, ratio to the base, mean KLD and its error
# (± the estimate's own standard error), p90, p99 and same-top-p errors.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-$(cd .. && pwd)/shared}
MODEL_NAME=${1:?MODEL}
CHUNKS=${2:-8}
shift 2 || true
SETTINGS=("$@")
[ ${#SETTINGS[@]} -gt 0 ] || SETTINGS=("--tail-samples 0" "")
SMELT=target/release/smelt
cargo build --release -q
W=${WORK:-/tmp/smelt-teacher-tail}/$MODEL_NAME
mkdir -p "$W"
if [ "$MODEL_NAME" = real ]; then
  REF=$("$SHARED/tools/llama-ref")
  TEACHER=$("$SHARED/tools/real-model")
  TEXT="$SHARED/assets/text/wiki.test.raw"
  STUDENTS=()
  for t in Q2_K Q3_K_M Q4_K_M IQ4_XS; do
    [ -f "$W/$t.gguf" ] || "$REF/bin/llama-quantize" --allow-requantize "$TEACHER" "$W/$t.gguf" "$t" >/dev/null 2>&1
    STUDENTS+=("$W/$t.gguf")
  done
  BASE="$W/base-$CHUNKS.bin"
  # llama.cpp's AMX kernels crash on Q4_K_M here: no repacking.
  [ -f "$BASE" ] || LLAMA_ARG_REPACK=0 "$REF/bin/llama-perplexity" -m "$TEACHER" -f "$TEXT" -c 512 \
    --chunks "$CHUNKS" --kl-divergence-base "$BASE" >/dev/null 2>&1
else
  R="$SHARED/reference/$MODEL_NAME"
  TEACHER="$R/$MODEL_NAME-f32.gguf"
  BASE="$R/kld-base.bin"
  STUDENTS=("$R/$MODEL_NAME-Q4_0.gguf" "$R/$MODEL_NAME-Q2_K.gguf" "$R/$MODEL_NAME-Q4_K_M.gguf")
fi
figures='"\(.kld.mean) \(.kld.p90) \(.kld.p99) \(.same_top_p) \(.kld_estimate_error // 0)"'
base_bytes=$(stat -c %s "$BASE")
declare -A FULL
for s in "${STUDENTS[@]}"; do
  full="$W/full-$(basename "$s" .gguf)-$(basename "$BASE").json"
  [ -f "$full" ] || $SMELT perplexity "$s" -f /dev/null --kld "$BASE" --json 2>/dev/null >"$full"
  FULL[$s]=$(jq -r "$figures" "$full")
  echo "full vocabulary $base_bytes B  $(basename "$s" .gguf)  ${FULL[$s]}"
done
for setting in "${SETTINGS[@]}"; do
  data="$W/import$(echo "$setting" | tr -c 'A-Za-z0-9_' '_').sdd"
  rm -f "$data"
  # shellcheck disable=SC2086
  $SMELT distill import "$BASE" --teacher "$TEACHER" -o "$data" $setting >/dev/null 2>&1
  bytes=$(stat -c %s "$data")
  for s in "${STUDENTS[@]}"; do
    got=$($SMELT distill eval "$s" "$data" --json 2>/dev/null | jq -r "$figures")
    read -r fm f90 f99 fsame _ <<<"${FULL[$s]}"
    read -r m p90 p99 same err <<<"$got"
    awk -v n="[$setting]" -v b="$bytes" -v base="$base_bytes" -v t="$(basename "$s" .gguf)" \
      -v m="$m" -v p90="$p90" -v p99="$p99" -v s="$same" -v e="$err" \
      -v fm="$fm" -v f90="$f90" -v f99="$f99" -v fs="$fsame" 'BEGIN {
        printf "%-28s %9d B (%6.0fx)  %-26s mean %.6f (%+.2f%% ±%.2f%%)  p90 %+.2f%%  p99 %+.2f%%  same-top %+.2f%%\n",
          n, b, base / b, t, m, 100 * (m / fm - 1), 100 * e / fm, 100 * (p90 / f90 - 1),
          100 * (p99 / f99 - 1), 100 * (s / fs - 1) }'
  done
done
