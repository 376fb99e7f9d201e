#!/usr/bin/env python3
"""Before/after timings of the analyses that run on the per-user fold operator.

Runs two `tenure` binaries (e.g. the release build of an older commit and the
current one) side by side on the same store, interleaved run by run so that a
noisy machine hurts both alike, and prints the median wall time, the ratio
new/old and the peak RSS of each command (from wait4's ru_maxrss).

    python3 benches/fold_bench.py --old /path/tenure-old --new target/release/tenure \\
        --data ./store --runs 5

A command the old binary does not have (a new subcommand) is timed with the new
binary only. Used for the figures of the engine-fold issue in benches/COMPARE.md.
"""
import argparse
import os
import statistics
import subprocess
import time


FUNNEL = "view_item,add_to_cart,checkout,purchase"


def cases(data, threads):
    t = ["--threads", str(threads), "--format", "json"]
    d = ["--data", data]
    return [
        ("retention week", ["retention", *d, "--period", "week", *t]),
        ("retention week --as-of", ["retention", *d, "--period", "week", "--as-of", "2026-03-01", *t]),
        ("retention week --from/--to", ["retention", *d, "--period", "week", "--from", "2026-01-15", "--to", "2026-03-15", *t]),
        ("retention week start/return where", ["retention", *d, "--period", "week", "--start-event", "view_item", "--return-event", "purchase", "--return-where", "revenue > 50", *t]),
        ("retention week --by variant", ["retention", *d, "--period", "week", "--by", "variant", *t]),
        ("sql retention('week')", ["sql", *d, "--threads", str(threads), "--format", "json", "SELECT * FROM retention('week')"]),
        ("kpi month", ["kpi", *d, "--period", "month", *t]),
        ("ltv week", ["ltv", *d, "--period", "week", *t]),
        ("lifecycle week", ["lifecycle", *d, "--period", "week", *t]),
        ("stickiness week", ["stickiness", *d, "--period", "week", *t]),
        ("funnel 4 steps by variant", ["funnel", *d, "--steps", FUNNEL, "--window", "7d", "--by", "variant", *t]),
        ("funnel 4 steps by variant --from/--to", ["funnel", *d, "--steps", FUNNEL, "--window", "7d", "--by", "variant", "--from", "2026-01-15", "--to", "2026-03-15", *t]),
        ("funnel step condition", ["funnel", *d, "--steps", "view_item,add_to_cart,checkout,purchase where revenue > 50", "--window", "7d", "--by", "variant", *t]),
        ("sql funnel(...)", ["sql", *d, "--threads", str(threads), "--format", "json", f"SELECT * FROM funnel('{FUNNEL}', '7d', 'variant')"]),
        ("segment R<30d and F>=3 --count", ["segment", *d, "R<30d and F>=3", "--count", *t]),
        ("segment ... --count --as-of", ["segment", *d, "R<30d and F>=3", "--count", "--as-of", "2026-03-01T00:00:00Z", *t]),
        ("segment M>=100 and first_seen within --count", ["segment", *d, "M >= 100 and first_seen within 30d", "--count", *t]),
        ("segment variant + did within --count", ["segment", *d, 'variant = "A" and did purchase >= 1 times within 30d', "--count", *t]),
        ("segment r_score >= 4 --users", ["segment", *d, "r_score >= 4 and m_score >= 4", "--users", *t]),
        ("abtest count + sum", ["abtest", *d, "--metric", "count:purchase", "--metric", "sum:revenue", *t]),
        ("abtest funnel metric", ["abtest", *d, "--metric", "funnel:view_item>add_to_cart>purchase within 7d", *t]),
        ("sql stickiness('week')", ["sql", *d, "--threads", str(threads), "--format", "json", "SELECT * FROM stickiness('week')"]),
    ]


def run(binary, argv):
    start = time.perf_counter()
    p = subprocess.Popen([binary, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - start
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024, code, err


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="substring of the case names to run")
    args = ap.parse_args()
    print(f"{'case':<36} {'old s':>8} {'new s':>8} {'new/old':>8} {'old MB':>8} {'new MB':>8}")
    for name, argv in cases(args.data, args.threads):
        if args.only and args.only not in name:
            continue
        res = {"old": [], "new": []}
        rss = {"old": 0.0, "new": 0.0}
        skip_old = False
        for i in range(args.runs + 1):
            for who in ("old", "new"):
                if who == "old" and skip_old:
                    continue
                binary = getattr(args, who)
                t, mb, code, err = run(binary, argv)
                if code != 0:
                    if who == "old":
                        skip_old = True
                        continue
                    raise SystemExit(f"{name}: new binary failed ({code}): {err[-400:]}")
                if i > 0:  # the first round warms the page cache
                    res[who].append(t)
                    rss[who] = max(rss[who], mb)
        med = {k: statistics.median(v) if v else None for k, v in res.items()}
        fmt = lambda v: f"{v:8.3f}" if v is not None else f"{'-':>8}"
        ratio = f"{med['new'] / med['old']:8.2f}" if med["old"] else f"{'-':>8}"
        oldmb = f"{rss['old']:8.0f}" if med["old"] else f"{'-':>8}"
        print(f"{name:<36} {fmt(med['old'])} {fmt(med['new'])} {ratio} {oldmb} {rss['new']:8.0f}", flush=True)


if __name__ == "__main__":
    main()
