#!/usr/bin/env bash
# Memory and speed on a ≥ 1 GB mixture of experts: a Qwen3-MoE built by transformers' own class
# (hidden 1024, 10 blocks, 32 experts of width 512, 4 per token; bf16, 1.16 GB) converted to F16
# by smelt and by convert_hf_to_gguf.py, then quantized by smelt and llama-quantize, one after the
# other, same threads; peak RSS from /usr/bin/time. The bound to hold: one expert stack (the largest
# tensor that must be held, 32 MiB in F16) + 256 MiB. Output feeds docs/PERFORMANCE.md.
#   scripts/bench_moe.sh [TYPE ...]      (default: Q4_K_M MXFP4_MOE; needs WITH_CONVERT=1 llama-ref)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
TYPES=("${@:-Q4_K_M}")
[ $# -eq 0 ] && TYPES=(Q4_K_M MXFP4_MOE)
T=$(nproc)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cargo build --release -q
SMELT=./target/release/smelt
"$SMELT" dev synth "$W/moe" --arch LlamaForCausalLM --hidden 64 --ffn 64 --layers 1 \
  --tokenizer "gpt2:$REF/llama.cpp/models/ggml-vocab-gpt-2.gguf" >/dev/null
"$REF/venv/bin/python" scripts/hf_tiny.py "$W/moe" Qwen3MoeForCausalLM '{"hidden_size": 1024,
  "intermediate_size": 3072, "moe_intermediate_size": 512, "num_experts": 32,
  "num_experts_per_tok": 4, "norm_topk_prob": true, "num_hidden_layers": 10,
  "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
  "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
  "tie_word_embeddings": true, "bos_token_id": 50256, "eos_token_id": 50256, "vocab_size": 50257}' \
  bfloat16 0.5
echo "checkpoint: $(du -cb "$W"/moe/*.safetensors | tail -1 | cut -f1) bytes bf16; threads: $T; $(lscpu | sed -n 's/^Model name: *//p')"
measure() { /usr/bin/time -o "$W/time" -f "%e %M" "$@" >"$W/log" 2>&1 || { tail -3 "$W/log"; exit 1; }; cat "$W/time"; }
read -r ref_s ref_kb < <(measure "$REF/venv/bin/python" "$REF/llama.cpp/convert_hf_to_gguf.py" "$W/moe" \
  --outfile "$W/ref-f16.gguf" --outtype f16)
read -r our_s our_kb < <(measure "$SMELT" convert "$W/moe" -o "$W/f16.gguf" --outtype f16)
same=$(cmp -s "$W/ref-f16.gguf" "$W/f16.gguf" && echo "byte-identical" || echo "DIFFERENT")
echo "convert F16: convert_hf_to_gguf.py ${ref_s} s, $((ref_kb / 1024)) MiB peak | smelt ${our_s} s, $((our_kb / 1024)) MiB peak | $same"
rm -f "$W/ref-f16.gguf"
for ty in "${TYPES[@]}"; do
  read -r ref_s ref_kb < <(measure "$REF/bin/llama-quantize" "$W/f16.gguf" "$W/ref.gguf" "$ty" "$T")
  read -r our_s our_kb < <(measure "$SMELT" quantize "$W/f16.gguf" "$W/ours.gguf" "$ty" -t "$T")
  same=$(cmp -s "$W/ref.gguf" "$W/ours.gguf" && echo "byte-identical" || echo "DIFFERENT")
  awk -v t="$ty" -v rs="$ref_s" -v rk="$ref_kb" -v os="$our_s" -v ok="$our_kb" -v same="$same" 'BEGIN {
    printf "quantize %s: llama-quantize %.2f s (%d MiB peak) | smelt %.2f s (%d MiB peak) | speed-up %.2fx | %s\n",
      t, rs, rk/1024, os, ok/1024, rs/os, same }'
done
