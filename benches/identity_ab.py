"""Times two builds of tenure side by side on the identity stores (see
identity_bench.sh): each analysis on the 10%-merged store and on the plain one,
every build and store in turn, RUNS rounds (15); prints per build the medians of
wall and CPU (user + system) time, merged / plain, and whether every output is
the same. The machine is shared and noisy: CPU time moves less than wall time.

Usage: BINS="/tmp/tenure-a /tmp/tenure-b" [RUNS=15] [ONLY=retention]
       [BENCH_DIR=/work/bench] [STORES="merged plain"] python3 benches/identity_ab.py
"""
import os, sys, time, statistics
runs = int(os.environ.get("RUNS", "15"))
bins = os.environ.get("BINS", "/tmp/tenure-head /tmp/tenure-new").split()
only = os.environ.get("ONLY", "")
merged, plain = os.environ.get("STORES", "merged plain").split()
analyses = ["retention --period week", "funnel --steps view_item,add_to_cart,purchase --window 7d", "segment F>=2 --count", "kpi --period month", "paths --after view_item --depth 5", "rfm", "retention --period week --as-of 2026-02-15T00:00:00Z"]
os.chdir(os.environ.get("BENCH_DIR", "/work/bench"))
def run(b, store, a):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        fd = os.open(f"/tmp/o.{os.path.basename(b)}.{store}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1); os.dup2(os.open("/dev/null", os.O_WRONLY), 2)
        os.execv(b, [b] + a.split() + ["--data", store, "--format", "json"])
    _, status, ru = os.wait4(pid, 0)
    if status != 0:
        sys.exit(f"{b} {a} --data {store} failed (status {status})")
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime
for a in analyses:
    if only and not a.startswith(only): continue
    res = {(b, s): ([], []) for b in bins for s in (merged, plain)}
    for i in range(runs):
        for b in bins:
            for s in (merged, plain):
                w, c = run(b, s, a)
                res[(b, s)][0].append(w); res[(b, s)][1].append(c)
    outs = set(open(f"/tmp/o.{os.path.basename(b)}.{s}", "rb").read() for b in bins for s in (merged, plain))
    line = f"{a[:40]:40}"
    for b in bins:
        mw, pw = statistics.median(res[(b, merged)][0]), statistics.median(res[(b, plain)][0])
        mc, pc = statistics.median(res[(b, merged)][1]), statistics.median(res[(b, plain)][1])
        line += f" | {os.path.basename(b)}: wall {mw:.3f}/{pw:.3f}={mw/pw:.2f} cpu {mc:.3f}/{pc:.3f}={mc/pc:.2f}"
    print(line + ("  same" if len(outs) == 1 else "  DIFFERENT"), flush=True)
