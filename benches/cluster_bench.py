#!/usr/bin/env python3
"""Every analysis locally and on a Ballista cluster on this box, side by side.

Starts `tenure cluster scheduler` and two `tenure cluster executor`s on
loopback (each with --tasks 1, so the cluster has the two slots the local run
has threads), then runs each case of benches/fold_bench.py locally and with
--cluster, alternating run by run, and prints the median wall times, the ratio
cluster/local and the client's peak RSS. From the executors' debug log it then
reports, per fold run, the bytes each key range read and the bytes of the
partial results the ranges sent to the merge (the shuffle).

    python3 benches/cluster_bench.py --tenure target/release/tenure --data ./store --runs 3

Used for the cluster figures of the cluster issue in benches/COMPARE.md.
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from fold_bench import cases, run  # noqa: E402


def free_port():
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def start(tenure, work, tasks):
    port = free_port()
    procs = [
        subprocess.Popen(
            [tenure, "cluster", "scheduler", "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "scheduler.log"), "w"),
        )
    ]
    time.sleep(1)
    for i in range(2):
        bind = free_port()
        d = os.path.join(work, f"executor-{i}")
        os.makedirs(d, exist_ok=True)
        procs.append(
            subprocess.Popen(
                [tenure, "cluster", "executor", "--scheduler", f"127.0.0.1:{port}",
                 "--bind", f"127.0.0.1:{bind}", "--tasks", str(tasks), "--work-dir", d],
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(work, f"executor-{i}.log"), "w"),
                env={**os.environ, "RUST_LOG": "warn,tenure_engine=debug"},
            )
        )
    return f"df://127.0.0.1:{port}", procs


def shuffle_report(work):
    """Bytes read per key range, and per fold task: (fold, rows, bytes sent, ms)."""
    scans, parts = [], []
    for i in range(2):
        text = open(os.path.join(work, f"executor-{i}.log")).read()
        scans += [int(m) for m in re.findall(r"key scan: range \d+\.\.\d+ read (\d+) bytes", text)]
        parts += [
            (f, int(r), int(b), int(ms))
            for f, r, b, ms in re.findall(
                r"fold (\w+): key range \d+ \(\d+\.\.\d+\) folded (\d+) rows, sends (\d+) bytes after (\d+) ms", text
            )
        ]
    return scans, parts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenure", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=1, help="task slots per executor")
    ap.add_argument("--only", help="substring of the case names to run")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tenure-cluster-bench-")
    url, procs = start(args.tenure, work, args.tasks)
    try:
        # Wait for both executors.
        for _ in range(100):
            t, _, code, _ = run(args.tenure, ["sql", "--data", args.data, "--cluster", url, "SELECT count(*) FROM events"])
            if code == 0:
                break
            time.sleep(0.3)
        time.sleep(3)
        print(f"{'case':<44} {'local s':>8} {'cluster s':>9} {'ratio':>6} {'MB loc':>7} {'MB cl':>7}")
        for name, argv in cases(args.data, args.threads):
            if args.only and args.only not in name:
                continue
            res = {"local": [], "cluster": []}
            rss = {"local": 0.0, "cluster": 0.0}
            for i in range(args.runs + 1):
                for who in ("local", "cluster"):
                    a = argv + (["--cluster", url] if who == "cluster" else [])
                    t, mb, code, err = run(args.tenure, a)
                    if code != 0:
                        raise SystemExit(f"{name} ({who}) failed ({code}): {err[-600:]}")
                    if i > 0:
                        res[who].append(t)
                        rss[who] = max(rss[who], mb)
            med = {k: statistics.median(v) for k, v in res.items()}
            print(f"{name:<44} {med['local']:8.3f} {med['cluster']:9.3f} {med['cluster'] / med['local']:6.2f} "
                  f"{rss['local']:7.0f} {rss['cluster']:7.0f}", flush=True)
        scans, parts = shuffle_report(work)
        if scans:
            print(f"\nkey ranges folded on the executors: {len(scans)}; bytes read per range: "
                  f"median {statistics.median(scans) / 1e6:.1f} MB, max {max(scans) / 1e6:.1f} MB, "
                  f"total {sum(scans) / 1e9:.2f} GB")
        if parts:
            print("\nper fold, its tasks (one key range each): rows per task, rows/s per task, bytes sent (shuffle)")
            for fold in sorted({p[0] for p in parts}):
                ps = [p for p in parts if p[0] == fold]
                rate = [r / (ms / 1e3) for _, r, _, ms in ps if ms > 0]
                print(f"  {fold:<12} tasks {len(ps):4}  rows/task {statistics.median([p[1] for p in ps]) / 1e6:6.2f} M  "
                      f"rows/s/task {statistics.median(rate) / 1e6 if rate else 0:6.1f} M  "
                      f"sent/task median {statistics.median([p[2] for p in ps]) / 1e3:9.1f} kB  max {max(p[2] for p in ps) / 1e6:7.2f} MB")
        print(f"logs: {work}")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
