#!/usr/bin/env bash
# Prompt-processing speed and peak RSS of `smelt perplexity` vs llama-perplexity on the same GGUF
# (a synthetic ~110M-parameter Llama, rows of 768/2048, Llama-2 tokenizer), F16 and Q4_K_M (or TYPES;
# the imatrix-only ones are made with a synthetic importance matrix), same
# machine, same thread count, same text and chunks (-c 512), in turn.
# Output feeds docs/PERFORMANCE.md.
# The machines here are noisy, so each tool runs ROUNDS times (default 3), alternating, and the
# summary line per type gives the medians.
# ARCH=qwen3 benchmarks a synthetic ~114M-parameter Qwen3 instead (transformers' own
# Qwen3ForCausalLM with random weights, hidden 768, ffn 2048, 12 layers, 12 query / 4 key-value
# heads of 64, q/k norms, GPT-2's 50257-token vocabulary, tied).
# ARCH=gemma3 benchmarks a synthetic ~127M-parameter Gemma 3 (transformers' Gemma3ForCausalLM,
# hidden 768, ffn 3072, 12 layers, 4 query / 1 key-value heads of 256, sliding window 512 as in
# Gemma 3 1B, GPT-2's vocabulary, tied).
# ARCH=real benchmarks the real Qwen2.5-Coder-0.5B-Instruct of `tools/real-model` (151,936-token
# vocabulary, 896-wide rows): TYPES name Q4_K_M (the downloaded file itself) or any type smelt
# re-quantizes that file to (F16, and from it BF16: its weights decoded and rounded).
#   [ROUNDS=3] [TYPES="F16 Q4_K_M"] [ARCH=llama|qwen3|gemma3|real] scripts/bench_perplexity.sh [CHUNKS]   (default: 8 chunks)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
CHUNKS=${1:-8}
ROUNDS=${ROUNDS:-3}
TYPES=${TYPES:-F16 Q4_K_M}
T=$(nproc)
TEXT="$SHARED/assets/text/wiki.test.raw"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cargo build --release -q
ARCH=${ARCH:-llama}
if [ "$ARCH" = real ]; then
  REAL=$("$SHARED/tools/real-model")
  ln -s "$REAL" "$W/Q4_K_M.gguf"
  ./target/release/smelt quantize --allow-requantize "$REAL" "$W/F16.gguf" F16 >/dev/null 2>&1
  DESC="Qwen2.5-Coder-0.5B-Instruct (real; llama.cpp's Q4_K_M: Q5_0/Q8_0 where rows are 896 wide, Q4_K/Q6_K ffn_down, Q8_0 output; vocab 151936)"
elif [ "$ARCH" = qwen3 ]; then
  ./target/release/smelt dev synth "$W/m" --hidden 64 --ffn 64 --layers 1 \
    --tokenizer "gpt2:$SHARED/assets/llamacpp-vocab/ggml-vocab-gpt-2.gguf" >/dev/null
  "$REF/venv/bin/python" scripts/hf_tiny.py "$W/m" Qwen3ForCausalLM '{"hidden_size": 768,
    "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 50257, "tie_word_embeddings": true,
    "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}' float16
  DESC="synthetic Qwen3 (transformers' Qwen3ForCausalLM; hidden 768, ffn 2048, 12 layers, 12/4 heads of 64, vocab 50257, tied)"
elif [ "$ARCH" = gemma3 ]; then
  ./target/release/smelt dev synth "$W/m" --hidden 64 --ffn 64 --layers 1 \
    --tokenizer "gpt2:$SHARED/assets/llamacpp-vocab/ggml-vocab-gpt-2.gguf" >/dev/null
  "$REF/venv/bin/python" scripts/hf_tiny.py "$W/m" Gemma3ForCausalLM '{"hidden_size": 768,
    "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
    "sliding_window": 512, "vocab_size": 50257, "tie_word_embeddings": true,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}' float16
  DESC="synthetic Gemma 3 (transformers' Gemma3ForCausalLM; hidden 768, ffn 3072, 12 layers, 4/1 heads of 256, window 512, vocab 50257, tied)"
else
  ./target/release/smelt dev synth "$W/m" --hidden 768 --ffn 2048 --layers 12 --heads 12 --kv-heads 12 \
    --dtype f16 --tokenizer "copy:$SHARED/assets/tokenizers/llama2-32000" >/dev/null
  DESC="synthetic Llama (hidden 768, ffn 2048, 12 layers, vocab 32000, tied)"
fi
[ "$ARCH" = real ] || ./target/release/smelt convert "$W/m" -o "$W/F16.gguf" --outtype f16 2>/dev/null
for ty in $TYPES; do
  imx=()
  case "$ty" in IQ1_*|IQ2_*|IQ3_XXS|IQ3_XS|Q2_K_S)   # imatrix-only types: a synthetic one
    [ -e "$W/imx.gguf" ] || "$REF/venv/bin/python" scripts/synthetic_imatrix.py "$W/F16.gguf" "$W/imx.gguf"
    imx=(--imatrix "$W/imx.gguf") ;;
  esac
  [ -e "$W/$ty.gguf" ] || ./target/release/smelt quantize "$W/F16.gguf" "$W/$ty.gguf" "$ty" "${imx[@]}" >/dev/null 2>&1
done
rm -rf "$W/m"
params=$(./target/release/smelt inspect "$W/F16.gguf" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(__import__("math").prod(t["shape"]) for t in d["tensors"]))')
tokens=$((CHUNKS * 512))
echo "model: $DESC, $params parameters; text: wiki.test.raw, -c 512 --chunks $CHUNKS ($tokens tokens); threads: $T; $(lscpu | sed -n 's/^Model name: *//p')"
# llama.cpp's AMX matmul crashes in these containers: on AMX CPUs it runs without repacking.
REPACK=LLAMA_ARG_REPACK=1; grep -q ' amx_int8' /proc/cpuinfo && REPACK=LLAMA_ARG_REPACK=0
measure() { /usr/bin/time -o "$W/time" -f "%e %M" "$@" >"$W/log" 2>&1 || { tail -3 "$W/log"; exit 1; }; cat "$W/time"; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
for ty in $TYPES; do
  : >"$W/rounds"
  for round in $(seq "$ROUNDS"); do
    read -r ref_s ref_kb < <(measure env $REPACK "$REF/bin/llama-perplexity" -m "$W/$ty.gguf" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$T")
    ref_ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$W/log")
    ref_pass=$(sed -n 's/.*perplexity: \([0-9.]*\) seconds per pass.*/\1/p' "$W/log")
    read -r our_s our_kb < <(measure ./target/release/smelt perplexity "$W/$ty.gguf" -f "$TEXT" -c 512 --chunks "$CHUNKS" -t "$T" --json)
    our_ppl=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["ppl"])' "$W/log")
    our_tps=$(python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1]))["tokens_per_s"])' "$W/log")
    awk -v t="$ty" -v r="$round" -v rs="$ref_s" -v rk="$ref_kb" -v rp="$ref_pass" -v os="$our_s" -v ok="$our_kb" -v n="$tokens" \
        -v rppl="$ref_ppl" -v oppl="$our_ppl" -v otps="$our_tps" 'BEGIN {
      printf "%s round %d: llama-perplexity %.1f s wall (%.1f tokens/s; first 2048-token pass %.2f s = %.1f tokens/s), %d MiB peak | smelt %.1f s wall (%.1f tokens/s; forward passes alone %.1f tokens/s), %d MiB peak | wall %.2fx, pass %.2fx | PPL %s vs %s\n",
        t, r, rs, n/rs, rp, 2048/rp, rk/1024, os, n/os, otps, ok/1024, rs/os, otps/(2048/rp), rppl, oppl }'
    awk -v rs="$ref_s" -v rp="$ref_pass" -v os="$our_s" -v otps="$our_tps" \
      'BEGIN { print rs, 2048/rp, os, otps }' >>"$W/rounds"
  done
  rw=$(cut -d' ' -f1 "$W/rounds" | median); rp=$(cut -d' ' -f2 "$W/rounds" | median)
  ow=$(cut -d' ' -f3 "$W/rounds" | median); op=$(cut -d' ' -f4 "$W/rounds" | median)
  awk -v t="$ty" -v k="$ROUNDS" -v rw="$rw" -v rp="$rp" -v ow="$ow" -v op="$op" 'BEGIN {
    printf "%s median of %d rounds: llama-perplexity %.2f s wall, %.1f tokens/s per pass | smelt %.2f s wall, %.1f tokens/s per pass | speed-up %.2fx wall, %.2fx per pass\n",
      t, k, rw, rp, ow, op, rw/ow, op/rp }'
done
