"""Exports a generated store as two NDJSON inputs with the same rows:
merged.ndjson, where 10% of users (hash % 10 == 0) send their first day's
events as anonymous `anon-<user>` and then `identify` (userId with that
anonymousId) one second after their first event; plain.ndjson, the same rows
all under the user id (the identify rows as plain `identify` events).

Usage: identity_export.py <store> <out dir> [merged|plain]: with a third
argument, only that input, written to stdout (to pipe into `tenure ingest -`
at 10x the data, where the files would not fit on disk)."""
import sys, duckdb
src, out = sys.argv[1], sys.argv[2]
only = sys.argv[3] if len(sys.argv) > 3 else None
con = duckdb.connect()
con.sql("SET threads=2")
con.sql("SET preserve_insertion_order=false")
con.sql(f"""
CREATE TEMP VIEW raw AS
SELECT user_id, event, ts, revenue, variant, event_id
FROM read_parquet('{src}/events/*/*.parquet', hive_partitioning=1)
""")
# Each user's first event by a join on a per-user aggregate (a window over
# every row would sort them all).
con.sql("""
CREATE TEMP VIEW e AS
SELECT raw.*, f.first_ts, hash(raw.user_id) % 10 = 0 AS merged
FROM raw JOIN (SELECT user_id, min(ts) AS first_ts FROM raw GROUP BY user_id) f USING (user_id)
""")

def target(name):
    if only is None:
        return f"{out}/{name}.ndjson"
    return "/dev/stdout"

common = "strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, event_id AS messageId"
if only in (None, "merged"):
  con.sql(f"""
COPY (
  SELECT 'track' AS type,
         CASE WHEN merged AND ts < first_ts + INTERVAL 1 DAY THEN NULL ELSE user_id END AS userId,
         CASE WHEN merged AND ts < first_ts + INTERVAL 1 DAY THEN 'anon-' || user_id END AS anonymousId,
         event, {common}, CAST(revenue AS VARCHAR) AS revenue, variant
  FROM e
  UNION ALL
  SELECT 'identify', user_id, 'anon-' || user_id, NULL,
         strftime(first_ts + INTERVAL 1 SECOND, '%Y-%m-%dT%H:%M:%S.%fZ'), 'id-' || user_id, NULL, NULL
  FROM (SELECT DISTINCT user_id, first_ts FROM e WHERE merged)
) TO '{target("merged")}' (FORMAT JSON)
""")
if only in (None, "plain"):
  con.sql(f"""
COPY (
  SELECT 'track' AS type, user_id AS userId, event, {common}, CAST(revenue AS VARCHAR) AS revenue, variant FROM e
  UNION ALL
  SELECT 'identify', user_id, NULL,
         strftime(first_ts + INTERVAL 1 SECOND, '%Y-%m-%dT%H:%M:%S.%fZ'), 'id-' || user_id, NULL, NULL
  FROM (SELECT DISTINCT user_id, first_ts FROM e WHERE merged)
) TO '{target("plain")}' (FORMAT JSON)
""")
