#!/usr/bin/env python3
"""A query over the Postgres wire (`tenure sql-server`) against the same query
in `tenure sql`, interleaved run by run on one store.

- `sql`: `tenure sql --format csv` (a process: start, open the store, run the
  query, print the rows);
- `wire`: a new psycopg connection per run (the server checks for a newer
  snapshot), the query, every row fetched, the connection closed;
- `session`: the same query on one open psycopg connection (as a BI tool's
  pool runs it);
- `psql`: `psql -c` (a process per run, the rows printed unaligned), the
  binary itself rather than Debian's Perl wrapper `/usr/bin/psql`, which
  takes ~27 ms to start before it connects.

Prints the median wall time of each and the ratios to `sql` (the figure of
issue 22 item 1: a query over the wire within 1.2x of `tenure sql`). Run it
with a python that has psycopg (the test environment's: ~/.cache/tenure-venv).

    ~/.cache/tenure-venv/bin/python benches/sql_server_bench.py \\
        --tenure target/release/tenure --data ./store --runs 9
"""
import argparse
import glob
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
        import psycopg
        line = server.stdout.readline().strip()
        port = line.split(":")[-1].split("/")[0]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
        psql = [binaries[-1] if binaries else "psql", "-h", "127.0.0.1", "-p", port, "-d", "tenure", "-X", "-A", "-t",
                "-F", ",", "-v", "ON_ERROR_STOP=1", "-c"]
        sql = [args.tenure, "sql", "--data", args.data, "--threads", str(args.threads),
               "--format", "csv"]
        connect = dict(host="127.0.0.1", port=int(port), dbname="tenure", user="bench")

        def wire(q):
            t = time.perf_counter()
            with psycopg.connect(**connect) as conn:
                conn.execute(q).fetchall()
            return time.perf_counter() - t

        session = psycopg.connect(**connect)

        def in_session(q):
            t = time.perf_counter()
            session.execute(q).fetchall()
            return time.perf_counter() - t

        print(f"{'query':<60} {'sql s':>7} {'wire s':>7} {'sess s':>7} {'psql s':>7}"
              f" {'wire/sql':>8} {'sess/sql':>8} {'psql/sql':>8}")
        for q in QUERIES:
            a, b, c, d = [], [], [], []
            for _ in range(args.runs):
                a.append(timed(sql + [q])[0])
                b.append(wire(q))
                c.append(in_session(q))
                d.append(timed(psql + [q], env)[0])
            ma, mb, mc, md = (statistics.median(x) for x in (a, b, c, d))
            print(f"{q[:60]:<60} {ma:7.3f} {mb:7.3f} {mc:7.3f} {md:7.3f}"
                  f" {mb / ma:8.2f} {mc / ma:8.2f} {md / ma:8.2f}")
        session.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
