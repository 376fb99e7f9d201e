"""Exports a generated store as two NDJSON inputs with the same rows:
merged.ndjson, where 10% of users (hash % 10 == 0) send their first day's
events as anonymous `anon-<user>` and then `identify` (userId with that
anonymousId) one second after their first event; plain.ndjson, the same rows
all under the user id (the identify rows as plain `identify` events)."""
import sys, duckdb
src, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.sql("SET threads=2")
con.sql(f"""
CREATE TEMP VIEW e AS
SELECT user_id, event, ts, revenue, variant, event_id,
       min(ts) OVER (PARTITION BY user_id) AS first_ts,
       hash(user_id) % 10 = 0 AS merged
FROM read_parquet('{src}/events/*/*.parquet', hive_partitioning=1)
""")
common = "strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, event_id AS messageId"
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
) TO '{out}/merged.ndjson' (FORMAT JSON)
""")
con.sql(f"""
COPY (
  SELECT 'track' AS type, user_id AS userId, event, {common}, CAST(revenue AS VARCHAR) AS revenue, variant FROM e
  UNION ALL
  SELECT 'identify', user_id, NULL,
         strftime(first_ts + INTERVAL 1 SECOND, '%Y-%m-%dT%H:%M:%S.%fZ'), 'id-' || user_id, NULL, NULL
  FROM (SELECT DISTINCT user_id, first_ts FROM e WHERE merged)
) TO '{out}/plain.ndjson' (FORMAT JSON)
""")
