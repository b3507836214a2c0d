#!/usr/bin/env bash
# Wall time, throughput and peak RSS of `smelt quantize` vs llama-quantize on the same ~1.07 GB F16
# GGUF (a synthetic Llama, 537M weights), same machine, same thread count, alternating runs;
# ROUNDS=N (default 1) repeats each pair and reports medians. Every type gets the same synthetic
# importance matrix (scripts/synthetic_imatrix.py) when IMATRIX=1, and always for the types that
# need one (IQ1_*, IQ2_*, IQ3_XXS/XS, Q2_K_S). Output feeds docs/PERFORMANCE.md.
#   [ROUNDS=3] [IMATRIX=1] scripts/bench_quantize.sh [TYPE ...]      (default: Q4_K_M)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
TYPES=("${@:-Q4_K_M}")
T=$(nproc)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cargo build --release -q
./target/release/smelt dev synth "$W/big" --hidden 2048 --ffn 5632 --layers 9 --heads 16 --kv-heads 4 \
  --dtype bf16 --untied --tokenizer "copy:$SHARED/assets/tokenizers/llama2-32000" >/dev/null
./target/release/smelt convert "$W/big" -o "$W/f16.gguf" --outtype f16 2>/dev/null
rm -rf "$W/big"
echo "input: $(stat -c %s "$W/f16.gguf") bytes F16; threads: $T; $(lscpu | sed -n 's/^Model name: *//p')"
"$REF/venv/bin/python" scripts/synthetic_imatrix.py "$W/f16.gguf" "$W/imatrix.gguf"
ROUNDS=${ROUNDS:-1}
measure() { /usr/bin/time -o "$W/time" -f "%e %M" "$@" >"$W/log" 2>&1 || { tail -3 "$W/log"; exit 1; }; cat "$W/time"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for ty in "${TYPES[@]}"; do
  imx=()
  case "$ty" in IQ1_*|IQ2_*|IQ3_XXS|IQ3_XS|Q2_K_S) imx=(--imatrix "$W/imatrix.gguf") ;; esac
  [ "${IMATRIX:-0}" = 1 ] && imx=(--imatrix "$W/imatrix.gguf")
  : >"$W/ref.times"; : >"$W/our.times"
  for _ in $(seq "$ROUNDS"); do
    measure "$REF/bin/llama-quantize" "${imx[@]}" "$W/f16.gguf" "$W/ref.gguf" "$ty" "$T" >>"$W/ref.times"
    measure ./target/release/smelt quantize "$W/f16.gguf" "$W/ours.gguf" "$ty" -t "$T" "${imx[@]}" >>"$W/our.times"
  done
  ref_s=$(cut -d' ' -f1 "$W/ref.times" | median); ref_kb=$(cut -d' ' -f2 "$W/ref.times" | median)
  our_s=$(cut -d' ' -f1 "$W/our.times" | median); our_kb=$(cut -d' ' -f2 "$W/our.times" | median)
  same=$(cmp -s "$W/ref.gguf" "$W/ours.gguf" && echo "byte-identical" || echo "DIFFERENT")
  awk -v t="$ty" -v rs="$ref_s" -v rk="$ref_kb" -v os="$our_s" -v ok="$our_kb" -v same="$same" 'BEGIN {
    gw = 537.0e6 / 1e9
    printf "%s: llama-quantize %.2f s (%.0f Mweights/s, %d MiB peak) | smelt %.2f s (%.0f Mweights/s, %d MiB peak) | speed-up %.2fx | %s\n",
      t, rs, gw*1000/rs, rk/1024, os, gw*1000/os, ok/1024, rs/os, same }'
done
