#!/usr/bin/env bash
# Load test of the HTTP ingest service, release build, loopback only:
#   benches/serve_load.sh [RUNS] [SECONDS] [-- SERVER_ARGS... [-- LOADGEN_ARGS...]]
# Each run starts a fresh `tenure-server` (store and WAL in a temp directory on
# local disk, fsync before every acknowledgement), drives it with the bounded
# `loadgen` example for SECONDS (default 10; 32 connections, batches of 100 track
# messages unless LOADGEN_ARGS say otherwise), stops it with SIGTERM (flush and
# commit), and checks that every acknowledged event was committed. Prints each
# run's figures, then the median of each over RUNS (default 5).
#
# The machine's two cores may be shared: each run reports `others_cores`, the
# CPU that processes other than the server and the load generator used during
# the run (0 = a quiet machine, 2 = both cores busy elsewhere). With
# TENURE_WAIT_IDLE=MINUTES each run first waits, up to that long, for a
# 3-second stretch with the CPUs at least 90% idle.
#
# Live segments (issue 18's figures: throughput against a run without, and the
# delay from an event's acknowledgement to its transition in the NDJSON sink at
# 50,000 events/s; the server prints the delays when it stops):
#   benches/serve_load.sh 3 20 -- --segments queries/triggers.seg \
#       --emit ndjson:/tmp/live-load.ndjson -- --rate 50000
#
# Overload (memory must stay bounded; the excess gets 429/503):
#   benches/serve_load.sh 3 30 -- --max-inflight 64 --max-wal-bytes 268435456 \
#       --flush-bytes 67108864 -- --clients 512
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenure-target}
runs=${1:-5}
secs=${2:-10}
shift $(($# < 2 ? $# : 2))
server_args=()
loadgen_args=()
if [ "${1:-}" = "--" ]; then
  shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do server_args+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  loadgen_args=("$@")
fi
[ -n "${TENURE_SKIP_BUILD:-}" ] || cargo build --release -q -p tenure-server --examples --bins
bin=$CARGO_TARGET_DIR/release
work=$(mktemp -d "${TMPDIR:-/tmp}/tenure-serve-load.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg);" \
  "rustc processes running: $(pgrep -c rustc || true)"
# Busy and total jiffies of all CPUs; CPU ticks of one process.
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
idle_pct() {
  read -r b0 t0 < <(cpu_busy); sleep 3; read -r b1 t1 < <(cpu_busy)
  echo $((100 - 100 * (b1 - b0) / (t1 - t0 + 1)))
}
hz=$(getconf CLK_TCK)

for r in $(seq 1 "$runs"); do
  if [ -n "${TENURE_WAIT_IDLE:-}" ]; then
    for _ in $(seq 1 $((TENURE_WAIT_IDLE * 20))); do [ "$(idle_pct)" -ge 90 ] && break; done
  fi
  rm -rf "$work/store" "$work/wal"
  "$bin/tenure-server" --to "$work/store" --wal "$work/wal" --write-key load \
    --listen 127.0.0.1:0 "${server_args[@]}" >"$work/server.out" 2>"$work/server.err" &
  pid=$!
  for _ in $(seq 1 100); do
    grep -q '^listening on ' "$work/server.out" 2>/dev/null && break
    sleep 0.1
  done
  url=$(sed -n 's/^listening on //p' "$work/server.out")
  [ -n "$url" ] || { cat "$work/server.err"; exit 1; }
  read -r busy0 _ < <(cpu_busy)
  srv0=$(proc_ticks "$pid")
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$work/loadgen.time" \
    "$bin/examples/loadgen" --url "$url" --key load --seconds "$secs" --server-pid "$pid" \
    "${loadgen_args[@]}" >"$work/run.txt" 2>"$work/ticks.txt"
  t1=$(date +%s.%N)
  read -r busy1 _ < <(cpu_busy)
  srv1=$(proc_ticks "$pid")
  kill -TERM "$pid"
  wait "$pid"
  pid=
  t2=$(date +%s.%N)
  read -r lu ls <"$work/loadgen.time"
  # cores used by everything else during the run
  others=$(python3 -c "
busy = ($busy1 - $busy0) / $hz; srv = ($srv1 - $srv0) / $hz; lg = $lu + $ls
print(f'{max(0.0, busy - srv - lg) / ($t1 - $t0):.2f} server_cores={srv / ($t1 - $t0):.2f} loadgen_cores={lg / ($t1 - $t0):.2f} stop_s={$t2 - $t1:.2f}')")
  result=$(grep '^RESULT' "$work/run.txt")
  committed=$(sed -n 's/.*committed \([0-9]*\)$/\1/p' "$work/server.err")
  acked=$(sed -n 's/.*acknowledged \([0-9]*\),.*/\1/p' "$work/server.err")
  if [ "$acked" != "$committed" ]; then
    echo "run $r: acknowledged $acked but committed $committed" >&2
    cat "$work/server.err" >&2
    exit 1
  fi
  echo "run $r: ${result#RESULT } others_cores=$others committed=$committed"
  # With --segments: the live transitions' delivery delays and the state size.
  grep -h 'tenure-server: live' "$work/server.err" | sed 's/^/    /' || true
  echo "$result others_cores=$others" >>"$work/results.txt"
  [ -n "${TENURE_LOAD_TICKS:-}" ] && sed 's/^/    /' "$work/ticks.txt"
done
echo "machine after: load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$work/results.txt" <<'PY'
import statistics, sys
rows = [dict(kv.split("=") for kv in line.split()[1:]) for line in open(sys.argv[1])]
keys = list(rows[0])
print(f"median of {len(rows)} runs: " + " ".join(
    f"{k}={statistics.median(float(r[k]) for r in rows):g}" for k in keys))
PY
