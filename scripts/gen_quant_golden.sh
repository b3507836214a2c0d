#!/usr/bin/env bash
# Regenerates tests/golden/quantize/: a small synthetic model (input.gguf, F16, weights from
# `smelt dev synth --dist mixed`), synthetic importance matrices in both formats, and digests.txt —
# the SHA-256 of the file llama-quantize (llama.cpp 0c1e57098, built by ../shared/tools/llama-ref)
# writes for each case. tests/quantize_cli.rs checks that smelt writes the same bytes.
#   scripts/gen_quant_golden.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
G=tests/golden/quantize
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cargo build --release -q
mkdir -p "$G"
./target/release/smelt dev synth "$W/m" --hidden 256 --ffn 256 --layers 1 --heads 4 --kv-heads 1 \
  --vocab 64 --dist mixed --untied --seed 7
./target/release/smelt convert "$W/m" -o "$G/input.gguf" --outtype f16
"$REF/venv/bin/python" scripts/synthetic_imatrix.py "$G/input.gguf" "$G/imatrix.gguf"
"$REF/venv/bin/python" scripts/synthetic_imatrix.py "$G/input.gguf" "$G/imatrix.dat"
cd "$G"
cases=()
for t in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K \
         IQ4_NL IQ4_XS TQ1_0 TQ2_0 Q1_0 Q2_0 F16 BF16 F32; do cases+=("$t"); done
for t in Q4_0 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_XS TQ1_0; do cases+=("$t --pure"); done
for t in Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q2_K_S Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_NL IQ4_XS; do
  cases+=("$t --imatrix imatrix.gguf"); done
for t in Q4_K_M IQ4_XS Q2_K_S; do cases+=("$t --imatrix imatrix.dat"); done
for t in IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ3_XXS IQ3_XS IQ3_S IQ3_M; do
  cases+=("$t --imatrix imatrix.gguf"); done
for t in IQ1_M IQ2_XXS IQ3_XXS; do cases+=("$t --imatrix imatrix.dat"); done
for t in IQ1_M IQ2_M IQ3_XXS; do cases+=("$t --pure --imatrix imatrix.gguf"); done
for t in IQ3_S IQ3_M; do cases+=("$t"); done
cases+=("Q4_K_M --pure --imatrix imatrix.gguf")
cases+=("Q4_K_M --tensor-type attn_v=q8_0 --tensor-type ffn_=q5_0")
cases+=("Q4_K_M --output-tensor-type q4_0 --token-embedding-type q5_k")
cases+=("Q4_K_M --leave-output-tensor")
{
  echo "# TYPE [FLAGS...] SHA256 — llama-quantize 0c1e57098 on input.gguf; regenerate: scripts/gen_quant_golden.sh"
  for c in "${cases[@]}"; do
    read -r t flags <<<"$c"
    # shellcheck disable=SC2086
    "$REF/bin/llama-quantize" $flags input.gguf "$W/out.gguf" "$t" 2 >"$W/log" 2>&1 || { tail -3 "$W/log" >&2; exit 1; }
    echo "$c $(sha256sum "$W/out.gguf" | cut -d' ' -f1)"
  done
} >digests.txt
wc -l digests.txt; du -sh .
