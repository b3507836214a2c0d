#!/usr/bin/env bash
# Wall time and peak RSS of `smelt convert` vs llama.cpp's convert_hf_to_gguf.py on the same
# synthetic ~1.07 GB bf16 Llama, same machine, one run. Output feeds docs/PERFORMANCE.md.
# Usage: scripts/bench_convert.sh [outtype]   (needs WITH_CONVERT=1 ../shared/tools/llama-ref)
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-f16}
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref" --path)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cargo build --release -q
./target/release/smelt dev synth "$W/big" --hidden 2048 --ffn 5632 --layers 9 --heads 16 --kv-heads 4 \
  --dtype bf16 --shards 2 --untied --tokenizer "copy:$SHARED/assets/tokenizers/llama2-32000"
du -sb "$W/big" | awk '{print "checkpoint bytes:", $1}'
measure() { /usr/bin/time -o "$W/time" -f "%e s wall, %M KiB peak RSS" "$@" >"$W/log" 2>&1 || { tail -3 "$W/log"; exit 1; }; cat "$W/time"; }
echo "threads: $(nproc)"
echo "smelt:            $(measure ./target/release/smelt convert "$W/big" -o "$W/smelt.gguf" --outtype "$T")"
echo "convert_hf_to_gguf: $(measure "$REF/venv/bin/python" "$REF/llama.cpp/convert_hf_to_gguf.py" "$W/big" --outfile "$W/ref.gguf" --outtype "$T")"
cmp "$W/smelt.gguf" "$W/ref.gguf" && echo "outputs byte-identical"
