#!/usr/bin/env python3
"""Reads a Tenure store back with DuckDB, straight from the Parquet files
(`read_parquet(..., hive_partitioning=1)`), and compares it with the NDJSON the
store was ingested from, also read by DuckDB: row count, distinct event ids,
distinct users, revenue sum (exact decimal), per-day counts, and that each
file's `date=` partition matches the date of its rows' `ts`.

usage: duckdb_check.py STORE_DIR INPUT.ndjson
Exits 1 (printing the differences) when anything disagrees."""
import sys

import duckdb


def main(store, source):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    events = f"read_parquet('{store}/events/*/*.parquet', hive_partitioning=1)"
    src = (
        f"read_json('{source}', format='newline_delimited', "
        "columns={event_id: 'VARCHAR', user_id: 'VARCHAR', ts: 'TIMESTAMPTZ', revenue: 'DECIMAL(18,2)'})"
    )
    q = (
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT user_id), "
        "coalesce(sum(revenue), 0)::VARCHAR FROM {}"
    )
    got = con.execute(q.format(events)).fetchone()
    want = con.execute(q.format(src)).fetchone()
    problems = []
    if got != want:
        problems.append(f"totals differ: parquet {got} vs input {want}")
    days = "SELECT CAST(ts AS DATE) AS d, count(*) FROM {} GROUP BY 1 ORDER BY 1"
    if con.execute(days.format(events)).fetchall() != con.execute(days.format(src)).fetchall():
        problems.append("per-day counts differ")
    bad = con.execute(
        f"SELECT count(*) FROM {events} WHERE CAST(date AS VARCHAR) <> strftime(ts, '%Y-%m-%d')"
    ).fetchone()[0]
    if bad:
        problems.append(f"{bad} rows sit in the wrong date partition")
    print(f"duckdb: rows={got[0]} event_ids={got[1]} users={got[2]} revenue={got[3]}")
    for p in problems:
        print("MISMATCH:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
