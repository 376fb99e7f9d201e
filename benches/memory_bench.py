#!/usr/bin/env python3
"""Peak memory and time of every analysis on one store (the bounded-memory
figures of the cluster issue: every analysis under 1 GiB at ~96M and ~290M
events).

Runs each case of benches/fold_bench.py plus the analyses it leaves out (RFM,
lifecycle stages, paths, CLV, segment rows, SQL over `segment()`/`rfm()`)
once per run with one `tenure` binary, and prints the median wall time, the
peak RSS (wait4's ru_maxrss) and whether it is under 1 GiB.

    python3 benches/memory_bench.py --tenure target/release/tenure --data ./store --runs 1
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from fold_bench import cases, run  # noqa: E402

GIB = 1024.0
SEGMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "queries", "rfm_segments.seg")


def extra(data, threads):
    t = ["--threads", str(threads), "--format", "json"]
    d = ["--data", data]
    sql = ["sql", *d, "--threads", str(threads), "--format", "json"]
    return [
        ("rfm", ["rfm", *d, *t]),
        ("segment first_seen/last_seen rows", ["segment", *d, "first_seen within 60d and last_seen within 7d", *t]),
        ("segment @champions --count", ["segment", *d, "@champions", "--count", "--segments", SEGMENTS, *t]),
        ("paths --after view_item", ["paths", *d, "--after", "view_item", "--depth", "5", *t]),
        ("clv", ["clv", *d, *t]),
        ("sql count(*) FROM rfm()", [*sql, "SELECT r_score, count(*) FROM rfm() GROUP BY 1 ORDER BY 1"]),
        ("sql count(*) FROM segment(...)", [*sql, "SELECT count(*) FROM segment('R<30d and F>=3')"]),
        ("sql lifecycle_stages()", [*sql, "SELECT * FROM lifecycle_stages()"]),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenure", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="substring of the case names to run")
    args = ap.parse_args()
    print(f"{'case':<44} {'s':>8} {'MiB':>8}  under 1 GiB")
    worst = 0.0
    for name, argv in cases(args.data, args.threads) + extra(args.data, args.threads):
        if args.only and args.only not in name:
            continue
        times, rss = [], 0.0
        for _ in range(args.runs):
            elapsed, mb, code, err = run(args.tenure, argv)
            if code != 0:
                print(f"{name:<44} failed ({code}): {err.strip()[-300:]}")
                break
            times.append(elapsed)
            rss = max(rss, mb)
        else:
            worst = max(worst, rss)
            ok = "yes" if rss < GIB else "NO"
            print(f"{name:<44} {statistics.median(times):>8.3f} {rss:>8.0f}  {ok}", flush=True)
    print(f"largest peak: {worst:.0f} MiB")


if __name__ == "__main__":
    main()
