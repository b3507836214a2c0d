#!/usr/bin/env bash
# The expert-pruning table of docs/PRUNING.md: a Qwen3-MoE built by transformers' own class
# (8 experts of width 256, 2 per token, 4 blocks, random weights of spread 1;
# GPT-2's vocabulary) pruned to 6 and 4 experts per block by each ranking, scored on held-out text
# (tinystories-eval.txt, -c 128, 20 chunks): mean KL divergence from the unpruned model (how much
# the output changed) and perplexity; random drops are the mean of 5 seeds. Calibration:
# tinystories-calib.txt, -c 128, 8 chunks. Each pruned file also runs in llama-perplexity: the last
# column is the relative difference of its PPL from smelt's (-c 512, 4 chunks of the same text).
# Usage: scripts/prune_experts.sh   (needs ../shared or $SMELT_SHARED, and the llama.cpp reference
# built with WITH_CONVERT=1; builds smelt)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SMELT_SHARED:-../shared}"
REF="$("$SHARED/tools/llama-ref")"
CALIB=(-f "$SHARED/assets/text/tinystories-calib.txt" -c 128 --chunks 8)
EVAL=(-f "$SHARED/assets/text/tinystories-eval.txt" -c 128 --chunks 20)
cargo build --release -q
SMELT=$PWD/target/release/smelt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$SMELT" dev synth "$TMP/ckpt" --arch LlamaForCausalLM --hidden 64 --ffn 64 --layers 1 \
  --tokenizer "gpt2:$REF/llama.cpp/models/ggml-vocab-gpt-2.gguf" >/dev/null
"$REF/venv/bin/python" scripts/hf_tiny.py "$TMP/ckpt" Qwen3MoeForCausalLM '{"hidden_size": 256,
  "intermediate_size": 768, "moe_intermediate_size": 256, "num_experts": 8, "num_experts_per_tok": 2,
  "norm_topk_prob": true, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
  "head_dim": 64, "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
  "tie_word_embeddings": true, "bos_token_id": 50256, "eos_token_id": 50256, "vocab_size": 50257}' \
  bfloat16 1.0
"$SMELT" convert "$TMP/ckpt" -o "$TMP/full.gguf" --outtype f32 >/dev/null 2>&1
"$SMELT" perplexity "$TMP/full.gguf" "${EVAL[@]}" --kld-save "$TMP/base.bin" --json >"$TMP/full.json"
score() { # model → "KLD PPL"
  "$SMELT" perplexity "$1" "${EVAL[@]}" --kld "$TMP/base.bin" --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f %.1f" % (d["kld"]["mean"], d["ppl"]))'
}
CHECK=(-f "$SHARED/assets/text/tinystories-eval.txt" -c 512 --chunks 4)
llama_ppl() { # model → relative difference of llama-perplexity's PPL from smelt's
  theirs=$(LLAMA_ARG_REPACK=0 "$REF/bin/llama-perplexity" -m "$1" "${CHECK[@]}" -t 2 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  ours=$("$SMELT" perplexity "$1" "${CHECK[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
  python3 -c "print('%.1e' % abs($theirs / $ours - 1))"
}
echo "unpruned: PPL $(python3 -c 'import json; print("%.1f" % json.load(open("'"$TMP/full.json"'"))["ppl"])')"
echo
echo "| experts kept | ranking | mean KLD | PPL | llama-perplexity vs smelt |"
echo "|---|---|---:|---:|---:|"
for ratio in 0.25 0.5; do
  kept=$(python3 -c "print(8 - round($ratio * 8))")
  for rank in contribution usage; do
    "$SMELT" prune "$TMP/full.gguf" "$TMP/p.gguf" --method experts --ratio $ratio \
      --expert-score $rank "${CALIB[@]}" --json >/dev/null
    read -r kld ppl < <(score "$TMP/p.gguf")
    echo "| $kept of 8 | $rank | $kld | $ppl | $(llama_ppl "$TMP/p.gguf") |"
  done
  sum=$(for seed in 1 2 3 4 5; do
    "$SMELT" prune "$TMP/full.gguf" "$TMP/r.gguf" --method experts --ratio $ratio \
      --expert-score random --seed $seed --json >/dev/null
    score "$TMP/r.gguf"
  done | awk '{k += $1; p += $2} END {printf "%.4f %.1f", k / NR, p / NR}')
  read -r kld ppl <<<"$sum"
  echo "| $kept of 8 | random (mean of 5 seeds) | $kld | $ppl | – |"
done
