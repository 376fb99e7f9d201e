#!/usr/bin/env python3
"""A query over the Postgres wire (`tenure sql-server`, queried with psql)
against the same query in `tenure sql`, interleaved run by run on one store.

Each psql run opens a new connection (the server opens the store's newest
snapshot for it, as it does for every connection), runs the query and prints
the rows; each `tenure sql` run starts a process, opens the store, runs the
query and prints the rows as CSV. Prints the median wall time of each and the
ratio wire / sql (the figure of issue 22 item 1: within 1.2x).

    python3 benches/sql_server_bench.py --tenure target/release/tenure \\
        --data ./store --runs 7
"""
import argparse
import os
import statistics
import subprocess
import time

QUERIES = [
    "SELECT * FROM retention('week')",
    "SELECT * FROM funnel('view_item, add_to_cart, checkout, purchase', '7d', 'variant')",
    "SELECT count(*) FROM segment('R < 30d and F >= 3')",
    "SELECT * FROM kpi('month')",
    "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
    "SELECT user_id, ts FROM events WHERE event = 'purchase' LIMIT 100000",
]


def timed(cmd, env=None):
    t = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {out.stderr.decode()}")
    return elapsed, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenure", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    server = subprocess.Popen(
        [args.tenure, "sql-server", "--data", args.data, "--listen", "127.0.0.1:0",
         "--threads", str(args.threads)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline().strip()
        port = line.split(":")[-1].split("/")[0]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        psql = ["psql", "-h", "127.0.0.1", "-p", port, "-d", "tenure", "-X", "-A", "-t",
                "-F", ",", "-v", "ON_ERROR_STOP=1", "-c"]
        sql = [args.tenure, "sql", "--data", args.data, "--threads", str(args.threads),
               "--format", "csv"]
        print(f"{'query':<90} {'sql s':>8} {'wire s':>8} {'wire/sql':>8}")
        for q in QUERIES:
            a, b = [], []
            for _ in range(args.runs):
                a.append(timed(sql + [q])[0])
                b.append(timed(psql + [q], env)[0])
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"{q[:90]:<90} {ma:8.3f} {mb:8.3f} {mb / ma:8.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
