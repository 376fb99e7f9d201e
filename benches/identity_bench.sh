#!/bin/bash
# Usage: benches/identity_bench.sh (BENCH_DIR holds the stores "merged" and "plain" ingested
# from identity_export.py's outputs; STORE=<dir> times another store against "plain").
# Times analyses on the merged store (10% of users merged at read) and the
# plain one (the same rows under user ids), alternating, RUNS runs each (5); medians.
B=${B:-$HOME/.cache/tenure-release/release/tenure}
cd "${BENCH_DIR:-/work/bench}"
run() { local s=$1; shift; local t0=$(date +%s.%N); "$B" "$@" --data $s --format json > /tmp/out.$s 2>/dev/null; local t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
STORE=${STORE:-merged}
RUNS=${RUNS:-5}
ONLY=${ONLY:-}
for a in "retention --period week" "funnel --steps view_item,add_to_cart,purchase --window 7d" "segment F>=2 --count" "kpi --period month" "paths --after view_item --depth 5" "rfm" "retention --period week --as-of 2026-02-15T00:00:00Z"; do
  [ -n "$ONLY" ] && [[ "$a" != $ONLY* ]] && continue
  m=(); p=()
  for i in $(seq $RUNS); do
    m+=($(run $STORE $a)); p+=($(run plain $a))
  done
  cmp -s /tmp/out.$STORE /tmp/out.plain && same=same || same=DIFFERENT
  mm=$(printf '%s\n' "${m[@]}" | sort -n | sed -n $(( (RUNS + 1) / 2 ))p); pm=$(printf '%s\n' "${p[@]}" | sort -n | sed -n $(( (RUNS + 1) / 2 ))p)
  printf '%-60s merged %.3f s  plain %.3f s  ratio %.2f  output %s\n' "$a" $mm $pm $(echo "$mm / $pm" | bc -l) $same
done
