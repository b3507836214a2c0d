#!/usr/bin/env bash
# Measured allocation against llama.cpp's mixtures on a real model with a large vocabulary and
# rows that are not multiples of 256 (so the mixtures fall back to 32-value block types):
# Qwen2.5-Coder-0.5B-Instruct from `tools/real-model`, its Q4_K_M decoded to F32 as the teacher.
# An imatrix over IMX_CHUNKS chunks of tinyshakespeare.txt (the same file for both tools);
# llama-quantize --imatrix makes each mixture; smelt measures per-tensor costs once on CHUNKS
# chunks of tinyshakespeare.txt and solves for each mixture's exact size from the saved costs;
# both are compared with the F32 teacher on WIKI_CHUNKS chunks of wiki.test.raw (ctx 512).
#   [TYPES="Q2_K Q3_K_M Q4_K_M"] [CHUNKS=2] [IMX_CHUNKS=16] [WIKI_CHUNKS=16] [OUT=target/allocation-real] scripts/allocation_real.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
REAL=$("$SHARED/tools/real-model")
TYPES=${TYPES:-Q2_K Q3_K_M Q4_K_M}
CHUNKS=${CHUNKS:-2}
IMX_CHUNKS=${IMX_CHUNKS:-16}
WIKI_CHUNKS=${WIKI_CHUNKS:-16}
OUT=${OUT:-target/allocation-real}
TX="$SHARED/assets/text"
T=$(nproc)
S=./target/release/smelt
mkdir -p "$OUT"
cargo build --release -q
export LLAMA_ARG_REPACK=0 GGML_NO_BACKTRACE=1
secs() { python3 -c "import time; print(time.time())"; }
F32="$OUT/F32.gguf"; IMX="$OUT/imatrix.gguf"
[ -f "$F32" ] || "$S" quantize --allow-requantize "$REAL" "$F32" F32 -t "$T" 2>/dev/null
[ -f "$IMX" ] || "$S" imatrix "$F32" -f "$TX/tinyshakespeare.txt" -c 512 --chunks "$IMX_CHUNKS" -o "$IMX" -t "$T" >/dev/null 2>&1
[ -f "$OUT/base-wiki.bin" ] || "$S" perplexity "$F32" -f "$TX/wiki.test.raw" --chunks "$WIKI_CHUNKS" --kld-save "$OUT/base-wiki.bin" -t "$T" >/dev/null 2>&1
t0=$(secs)
[ -f "$OUT/costs.json" ] || "$S" quantize "$F32" "$OUT/measured.gguf" auto --target-bpw 5 -f "$TX/tinyshakespeare.txt" \
  --chunks "$CHUNKS" --imatrix "$IMX" --plan-out "$OUT/costs.json" -t "$T" 2>/dev/null
t1=$(secs)
echo "measure + solve: $(python3 -c "print(f'{$t1-$t0:.0f}')") s ($CHUNKS chunks of 512, $(python3 -c 'import json,sys; print(sum(len(t["candidates"]) for t in json.load(open(sys.argv[1]))["tensors"]))' "$OUT/costs.json") measurements)"
kld() {
  "$S" perplexity "$1" -f "$TX/wiki.test.raw" --kld "$OUT/base-wiki.bin" -t "$T" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["kld"]["mean"], d["same_top_p"], d["ppl"])'
}
echo "| type | llama.cpp bytes | smelt auto bytes | KLD llama | KLD auto | ratio | same top p llama / auto | PPL auto smelt / llama-perplexity |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
for ty in $TYPES; do
  mix="$OUT/llama-$ty.gguf"; auto="$OUT/auto-$ty.gguf"
  [ -f "$mix" ] || "$REF/bin/llama-quantize" --imatrix "$IMX" "$F32" "$mix" "$ty" "$T" >/dev/null 2>&1
  size=$(stat -c %s "$mix")
  "$S" quantize "$F32" "$auto" auto --plan "$OUT/costs.json" --target-size "$size" --imatrix "$IMX" -t "$T" 2>/dev/null
  read -r mk ms _ <<<"$(kld "$mix")"
  read -r ak as ap <<<"$(kld "$auto")"
  lp=$("$REF/bin/llama-perplexity" -m "$auto" -f "$TX/wiki.test.raw" -c 512 --chunks "$WIKI_CHUNKS" -t "$T" 2>&1 |
    sed -n 's/.*\[\('"$WIKI_CHUNKS"'\)\]\([0-9.]*\),.*/\2/p' | tail -1)
  python3 -c "
size, asize = $size, $(stat -c %s "$auto")
mk, ak, ms, as_, ap, lp = $mk, $ak, $ms, $as, $ap, ${lp:-0}
print(f'| $ty | {size:,} | {asize:,} | {mk:.5f} | {ak:.5f} | **{ak/mk:.2f}** | {100*ms:.2f} / {100*as_:.2f} % | {ap:.4f} / {lp:.4f} |')"
done
