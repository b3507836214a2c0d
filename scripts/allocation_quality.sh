#!/usr/bin/env bash
# Measured allocation (`smelt quantize … auto`) against llama.cpp's mixtures at equal size, on
# tinystories-3M: for each file type, llama-quantize --imatrix makes the mixture; smelt allocates
# a file of exactly that size from one measurement of per-tensor costs (tinystories-calib, the
# same imatrix), re-solved per size from the saved plan; both are compared with the F32 model on
# held-out text (tinystories-eval, ctx 512, every chunk) and on another domain (wiki.test.raw,
# ctx 512, WIKI_CHUNKS chunks). Each allocated file is also run through llama-perplexity (its PPL
# must be smelt's within 0.1 %). Prints a markdown table and writes OUT/table.md, OUT/points.csv
# and OUT/size-vs-kld.svg (the mixtures as points, the allocation as a curve) for docs/QUALITY.md.
#   [TYPES="Q2_K Q3_K_S …"] [CURVE="2.5 3 …"] [CHUNKS=8] [WIKI_CHUNKS=100] [OUT=target/allocation] scripts/allocation_quality.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SMELT_SHARED:-../shared}
REF=$("$SHARED/tools/llama-ref")
TYPES=${TYPES:-Q2_K Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_M IQ4_XS IQ2_XXS IQ1_S}
CURVE=${CURVE:-2.25 2.75 3.25 3.75 4.25 4.75 5.25 5.75 6.25}
CHUNKS=${CHUNKS:-8}
WIKI_CHUNKS=${WIKI_CHUNKS:-100}
OUT=${OUT:-target/allocation}
R="$SHARED/reference/tinystories-3M"
TX="$SHARED/assets/text"
F32="$R/tinystories-3M-f32.gguf"
IMX="$R/imatrix.gguf"
T=$(nproc)
S=./target/release/smelt
mkdir -p "$OUT"
cargo build --release -q
export LLAMA_ARG_REPACK=0 GGML_NO_BACKTRACE=1

kld() { # model base text chunks -> "mean_kld same_top ppl"
  "$S" perplexity "$1" -f "$3" --kld "$2" ${4:+--chunks $4} -t "$T" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["kld"]["mean"], d["same_top_p"], d["ppl"])'
}
secs() { python3 -c "import time; print(time.time())"; }

[ -f "$OUT/base-eval.bin" ] || "$S" perplexity "$F32" -f "$TX/tinystories-eval.txt" --kld-save "$OUT/base-eval.bin" -t "$T" >/dev/null 2>&1
[ -f "$OUT/base-wiki.bin" ] || "$S" perplexity "$F32" -f "$TX/wiki.test.raw" --chunks "$WIKI_CHUNKS" --kld-save "$OUT/base-wiki.bin" -t "$T" >/dev/null 2>&1

# One measurement; every size below is solved from its costs.
t0=$(secs)
"$S" quantize "$F32" "$OUT/measured.gguf" auto --target-bpw 4.5 -f "$TX/tinystories-calib.txt" \
  --chunks "$CHUNKS" --imatrix "$IMX" --plan-out "$OUT/costs.json" -t "$T" 2>/dev/null
t1=$(secs)
"$S" perplexity "$F32" -f "$TX/tinystories-calib.txt" -t "$T" >/dev/null 2>&1
t2=$(secs)
python3 -c "print(f'measure + solve: {$t1-$t0:.1f} s; one smelt perplexity pass over tinystories-calib: {$t2-$t1:.1f} s; ratio {($t1-$t0)/($t2-$t1):.1f}')" | tee "$OUT/cost.txt"

echo "kind,name,bytes,kld_eval,same_top_eval,kld_wiki,same_top_wiki" > "$OUT/points.csv"
{
  echo "| type | llama.cpp bytes | smelt auto bytes | KLD eval llama | KLD eval auto | ratio | same top p eval llama / auto | KLD wiki llama | KLD wiki auto | ratio | PPL auto smelt / llama-perplexity |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"
} > "$OUT/table.md"
for ty in $TYPES; do
  mix="$OUT/llama-$ty.gguf"; auto="$OUT/auto-$ty.gguf"
  [ -f "$mix" ] || "$REF/bin/llama-quantize" --imatrix "$IMX" "$F32" "$mix" "$ty" 2 >/dev/null 2>&1
  size=$(stat -c %s "$mix")
  "$S" quantize "$F32" "$auto" auto --plan "$OUT/costs.json" --target-size "$size" --imatrix "$IMX" -t "$T" 2>/dev/null
  asize=$(stat -c %s "$auto")
  read -r mk ms mp <<<"$(kld "$mix" "$OUT/base-eval.bin" "$TX/tinystories-eval.txt")"
  read -r ak as ap <<<"$(kld "$auto" "$OUT/base-eval.bin" "$TX/tinystories-eval.txt")"
  read -r mwk mws _ <<<"$(kld "$mix" "$OUT/base-wiki.bin" "$TX/wiki.test.raw" "$WIKI_CHUNKS")"
  read -r awk aws _ <<<"$(kld "$auto" "$OUT/base-wiki.bin" "$TX/wiki.test.raw" "$WIKI_CHUNKS")"
  sp=$("$S" perplexity "$auto" -f "$TX/tinystories-eval.txt" --chunks 40 -t "$T" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
  # The running value after chunk 40 (llama-perplexity's log thread can lose its last line).
  lp=$("$REF/bin/llama-perplexity" -m "$auto" -f "$TX/tinystories-eval.txt" -c 512 --chunks 40 -t "$T" 2>&1 |
    sed -n 's/.*\[40\]\([0-9.]*\),.*/\1/p' | tail -1)
  echo "mixture,$ty,$size,$mk,$ms,$mwk,$mws" >> "$OUT/points.csv"
  echo "auto,$ty,$asize,$ak,$as,$awk,$aws" >> "$OUT/points.csv"
  python3 - "$ty" "$size" "$asize" "$mk" "$ak" "$ms" "$as" "$mwk" "$awk" "$sp" "$lp" >> "$OUT/table.md" <<'EOF'
import sys
ty, size, asize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
mk, ak, ms, as_, mwk, awk, sp, lp = map(float, sys.argv[4:])
print(f"| {ty} | {size:,} | {asize:,} | {mk:.5f} | {ak:.5f} | **{ak/mk:.2f}** | {100*ms:.2f} / {100*as_:.2f} % | {mwk:.5f} | {awk:.5f} | {awk/mwk:.2f} | {sp:.4f} / {lp:.4f} ({100*abs(sp/lp-1):.3f} %) |")
EOF
  tail -1 "$OUT/table.md"
done
for bpw in $CURVE; do
  auto="$OUT/curve-$bpw.gguf"
  "$S" quantize "$F32" "$auto" auto --plan "$OUT/costs.json" --target-bpw "$bpw" --imatrix "$IMX" -t "$T" 2>/dev/null
  read -r ak as _ <<<"$(kld "$auto" "$OUT/base-eval.bin" "$TX/tinystories-eval.txt")"
  read -r awk aws _ <<<"$(kld "$auto" "$OUT/base-wiki.bin" "$TX/wiki.test.raw" "$WIKI_CHUNKS")"
  echo "curve,$bpw,$(stat -c %s "$auto"),$ak,$as,$awk,$aws" >> "$OUT/points.csv"
done
python3 - "$OUT/points.csv" "$OUT/size-vs-kld.svg" <<'EOF'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
W, H, L, B = 640, 420, 70, 50
xs = [int(r["bytes"]) / 1e6 for r in rows]
ys = [math.log10(float(r["kld_eval"])) for r in rows]
x0, x1 = min(xs) * 0.95, max(xs) * 1.03
y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - 20)
Y = lambda v: H - B - (v - y0) / (y1 - y0) * (H - B - 20)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-12}" text-anchor="middle">file size (MB) — tinystories-3M</text>',
       f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">mean KLD vs F32 (tinystories-eval, log scale)</text>']
for e in range(y0, y1 + 1):
    out.append(f'<text x="{L-6}" y="{Y(e)+4}" text-anchor="end">1e{e}</text><line x1="{L}" y1="{Y(e)}" x2="{W-20}" y2="{Y(e)}" stroke="#ddd"/>')
t = x0
while t <= x1:
    out.append(f'<text x="{X(t)}" y="{H-B+16}" text-anchor="middle">{t:.2f}</text>')
    t += 0.25
pts = sorted((int(r["bytes"]) / 1e6, math.log10(float(r["kld_eval"]))) for r in rows if r["kind"] != "mixture")
out.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="' + " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in pts) + '"/>')
for r in rows:
    a, b = int(r["bytes"]) / 1e6, math.log10(float(r["kld_eval"]))
    if r["kind"] == "mixture":
        out.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="4" fill="#d62728"/><text x="{X(a)+6:.1f}" y="{Y(b)-6:.1f}">{r["name"]}</text>')
    else:
        out.append(f'<circle cx="{X(a):.1f}" cy="{Y(b):.1f}" r="3" fill="#1f77b4"/>')
out.append(f'<circle cx="{W-190}" cy="30" r="4" fill="#d62728"/><text x="{W-180}" y="34">llama.cpp mixture (--imatrix)</text>')
out.append(f'<line x1="{W-196}" y1="48" x2="{W-184}" y2="48" stroke="#1f77b4" stroke-width="2"/><text x="{W-180}" y="52">smelt auto (measured allocation)</text>')
out.append('</svg>')
open(sys.argv[2], "w").write("\n".join(out))
EOF
cat "$OUT/table.md"
