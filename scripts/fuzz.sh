#!/usr/bin/env bash
# Fuzzes every reader of files that come from strangers (cargo-fuzz targets in fuzz/): GGUF,
# checkpoint folder (config.json + safetensors), tokenizer import, imatrix (.gguf, .dat), KL-divergence
# base, teacher dataset (.sdd), release recipe. Each runs SECONDS (default 30) from the committed
# seeds (fuzz/seeds/TARGET) plus the corpus grown by earlier runs (fuzz/corpus/TARGET, not
# committed). A crash stops the script with the failing input under fuzz/artifacts/TARGET/.
# Prints one line per target: executions, corpus size, result. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-30}
shift || true
TARGETS=${*:-gguf checkpoint tokenizer imatrix kld_base sdd recipe}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
cargo +nightly fuzz build -O >/dev/null
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz: $t ok: $runs executions in ${SECONDS_EACH} s, corpus $(ls "corpus/$t" | wc -l) inputs"
  rm -f "$log"
done
