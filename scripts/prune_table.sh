#!/usr/bin/env bash
# The pruning tables of docs/PRUNING.md: stories260K pruned by every method, held-out perplexity
# (tinystories-eval.txt, -c 256, 20 chunks) by smelt; calibration on tinystories-calib.txt.
# Usage: scripts/prune_table.sh   (needs ../shared or $SMELT_SHARED; builds smelt)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SMELT_SHARED:-../shared}"
MODEL="$SHARED/reference/stories260K/stories260K-f32.gguf"
CALIB=(-f "$SHARED/assets/text/tinystories-calib.txt" -c 256 --chunks 40)
EVAL=(-f "$SHARED/assets/text/tinystories-eval.txt" -c 256 --chunks 20)
cargo build --release -q
SMELT=target/release/smelt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ppl() { "$SMELT" perplexity "$1" "${EVAL[@]}" --json | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["ppl"])'; }

echo "unpruned: $(ppl "$MODEL")"
echo
echo "| sparsity | magnitude | Wanda |"
echo "|---|---:|---:|"
for spec in "--ratio 0.25" "--ratio 0.5" "--ratio 0.75" "--nm 2:4"; do
  row="| ${spec#--* } "
  for method in magnitude wanda; do
    # shellcheck disable=SC2086
    "$SMELT" prune "$MODEL" "$TMP/m.gguf" --method $method $spec "${CALIB[@]}" --json >/dev/null
    row+="| $(ppl "$TMP/m.gguf") "
  done
  echo "$row|"
done
echo
echo "| dropped layer | PPL |"
echo "|---|---:|"
for layer in 0 1 2 3 4; do
  "$SMELT" prune "$MODEL" "$TMP/d.gguf" --method depth --layers $layer --json >/dev/null
  echo "| $layer | $(ppl "$TMP/d.gguf") |"
done
bi=$("$SMELT" prune "$MODEL" "$TMP/bi.gguf" --method depth --ratio 0.2 "${CALIB[@]}" --json)
echo
echo "Block Influence per layer: $(echo "$bi" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(", ".join("%.4f" % v for v in d["block_influence"]), "→ drops", d["dropped_layers"])')"
echo
echo "| structured | parameters | PPL |"
echo "|---|---:|---:|"
for spec in "depth --ratio 0.2" "ffn --ratio 0.25" "ffn --ratio 0.5" "heads --ratio 0.5"; do
  # shellcheck disable=SC2086
  params=$("$SMELT" prune "$MODEL" "$TMP/s.gguf" --method $spec "${CALIB[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["params_after"])')
  echo "| $spec | $params | $(ppl "$TMP/s.gguf") |"
done
