#!/usr/bin/env bash
# Ingest throughput and memory, end to end with the release binary:
#   benches/ingest_throughput.sh [USERS ...]      (default: 100000 1000000)
# For each size: generate NDJSON (90 days, ~10 events per user; cached under
# benches/data), ingest it into a fresh local store, report events/s and peak
# memory (GNU time), then check the Parquet with DuckDB against the input.
# Peak memory should stay flat as the input grows (streaming ingest).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenure-target}
cargo build --release --bin tenure
bin=$CARGO_TARGET_DIR/release/tenure
data=${TENURE_BENCH_DIR:-benches/data}
venv=${TENURE_VENV:-$HOME/.cache/tenure-venv}
mkdir -p "$data"
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import duckdb' 2>/dev/null || {
  python3 -m venv "$venv"; "$venv/bin/pip" install --quiet 'duckdb==1.*'; }
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
printf '%-10s %-12s %-10s %-12s %-10s\n' users events seconds events/s peak_MiB
for users in "${sizes[@]}"; do
  input="$data/events-$users.ndjson"
  [ -s "$input" ] || "$bin" gen --users "$users" --days 90 --seed 7 --to "$input"
  store="$data/store-$users"
  rm -rf "$store"
  /usr/bin/time -f '%M %e' -o "$data/time.txt" "$bin" ingest "$input" --to "$store" --json >"$data/summary.json" 2>"$data/ingest.log"
  read -r kb secs <"$data/time.txt"
  written=$("$venv/bin/python" -c "import json,sys; print(json.load(open('$data/summary.json'))['counters']['written'])")
  printf '%-10s %-12s %-10s %-12s %-10s\n' "$users" "$written" "$secs" \
    "$(python3 -c "print(round($written/$secs))")" "$((kb / 1024))"
  "$venv/bin/python" benches/duckdb_check.py "$store" "$input"
done
