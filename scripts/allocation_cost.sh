#!/usr/bin/env bash
# What `smelt quantize … auto` costs on a larger model: the synthetic ~110M-parameter Llama of
# scripts/bench_perplexity.sh (hidden 768, FFN 2048, 12 layers, Llama-2's 32000-token vocabulary,
# tied) as F32, with a synthetic importance matrix, calibrated on tinystories-calib.txt: the wall
# time of measuring and solving (CHUNKS chunks of 512, the default candidates) against one
# `smelt perplexity` pass over the whole calibration text, and the number of measurements.
#   [CHUNKS=2] scripts/allocation_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
CHUNKS=${CHUNKS:-2}
T=$(nproc)
CALIB="$SHARED/assets/text/tinystories-calib.txt"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cargo build --release -q
S=./target/release/smelt
"$S" dev synth "$W/m" --hidden 768 --ffn 2048 --layers 12 --heads 12 --kv-heads 12 \
  --dtype f16 --tokenizer "copy:$SHARED/assets/tokenizers/llama2-32000" >/dev/null
"$S" convert "$W/m" -o "$W/F32.gguf" --outtype f32 2>/dev/null
"$REF/venv/bin/python" scripts/synthetic_imatrix.py "$W/F32.gguf" "$W/imx.gguf"
params=$("$S" inspect "$W/F32.gguf" --json | python3 -c 'import json,sys,math; d=json.load(sys.stdin); print(sum(math.prod(t["shape"]) for t in d["tensors"]))')
secs() { python3 -c "import time; print(time.time())"; }
t0=$(secs)
"$S" perplexity "$W/F32.gguf" -f "$CALIB" -t "$T" >/dev/null 2>&1
t1=$(secs)
"$S" quantize "$W/F32.gguf" "$W/auto.gguf" auto --target-bpw 4.5 -f "$CALIB" --chunks "$CHUNKS" \
  --imatrix "$W/imx.gguf" --plan-out "$W/plan.json" -t "$T" 2>/dev/null
t2=$(secs)
n=$(python3 -c 'import json,sys; print(sum(len(t["candidates"]) for t in json.load(open(sys.argv[1]))["tensors"]))' "$W/plan.json")
python3 -c "print(f'$params parameters, {$n} measurements on $CHUNKS chunks of 512: measure + solve + write {$t2-$t1:.1f} s; one smelt perplexity pass over tinystories-calib {$t1-$t0:.1f} s; ratio {($t2-$t1)/($t1-$t0):.1f}')"
