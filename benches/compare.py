#!/usr/bin/env python3
"""End-to-end comparison of Tenure against DuckDB and chDB (embedded ClickHouse).

All three engines read the same generated Parquet store (`tenure gen`) with the same
thread count; the script checks that their numbers agree and prints median wall times,
ratios and peak memory. Documented in benches/COMPARE.md.

    python3 benches/compare.py                       # 1M users x 90 days (~10M events)
    python3 benches/compare.py --users 20000 --days 60 --runs 3
    python3 benches/compare.py --data /path/to/store --only retention,funnel
    python3 benches/compare.py --variants            # also time the rejected queries

Runs with a plain `python3` (standard library only): DuckDB and chDB are installed from
PyPI into a throwaway virtual environment (benches/.venv, git-ignored) and every
(analysis, engine) pair runs in its own worker process, so peak memory is per pair and
engines never share a process. Exit status: 0 when every available engine agrees, 1 when
any two disagree (or, with --require-tenure, when a Tenure command is not available),
2 on bad arguments or a failed setup.

Adding an analysis: append an `Analysis` to ANALYSES with a DuckDB query, a chDB query
(dicts of named variants: the first is the one timed by default), a function building
the Tenure command line, and normalisers turning each engine's output into the common
form {key tuple: value tuple}. Keys whose value is None are "not reported" and are left
out of the comparison.
"""
import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Versions measured in COMPARE.md; if a pinned install fails we fall back to the latest.
PINS = ["duckdb==2.0.0", "chdb==4.4.0"]
STEP_EVENTS = ["view_item", "add_to_cart", "checkout", "purchase"]
WINDOW_S = 7 * 86400
DAY_US = 86_400_000_000


# ---------------------------------------------------------------- queries -------------
# {ev} is the events relation; DuckDB: read_parquet(.../events/*/*.parquet,
# hive_partitioning=1), chDB: file('.../events/*/*.parquet', Parquet). Weeks are ISO
# weeks in UTC computed on integers: day = floor(epoch_us / 86400e6), and since
# 1970-01-01 was a Thursday, week = floor((day + 3) / 7) numbers Monday-start weeks
# (week w starts on day 7w - 3). No time-zone setting can change these numbers.

D_WEEK = "((epoch_us(ts) // 86400000000 + 3) // 7)"
C_WEEK = "intDiv(intDiv(toUnixTimestamp64Micro(ts), 86400000000) + 3, 7)"

RETENTION_DUCKDB = {
    # DISTINCT (user, week) pairs, each user's first week, join back: the fastest in
    # DuckDB at every size we tried (hash aggregates on two integers are cheap there).
    "distinct_join": f"""
WITH e AS (SELECT DISTINCT user_key, {D_WEEK} AS w FROM {{ev}}),
f AS (SELECT user_key, min(w) AS c FROM e GROUP BY user_key)
SELECT c, w - c AS k, count(*) AS users FROM e JOIN f USING (user_key) GROUP BY ALL""",
    # Same, with the first week from a window function instead of a join.
    "distinct_window": f"""
WITH e AS (SELECT DISTINCT user_key, {D_WEEK} AS w FROM {{ev}})
SELECT c, w - c AS k, count(*) AS users
FROM (SELECT w, min(w) OVER (PARTITION BY user_key) AS c FROM e) GROUP BY ALL""",
    # Lists per user: list of distinct weeks, unnested relative to the first week.
    "lists": f"""
WITH u AS (SELECT min(w) AS c, list(DISTINCT w) AS ws
           FROM (SELECT user_key, {D_WEEK} AS w FROM {{ev}}) GROUP BY user_key)
SELECT c, k, count(*) AS users FROM (SELECT c, unnest(ws) - c AS k FROM u) GROUP BY ALL""",
    # Lists per user, duplicates removed after aggregation (list_distinct).
    "lists_post_distinct": f"""
WITH u AS (SELECT min(w) AS c, list_distinct(list(w)) AS ws
           FROM (SELECT user_key, {D_WEEK} AS w FROM {{ev}}) GROUP BY user_key)
SELECT c, k, count(*) AS users FROM (SELECT c, unnest(ws) - c AS k FROM u) GROUP BY ALL""",
    # One 64-bit bitmap of active weeks per user (relative to the data's first week),
    # users counted per distinct bitmap, then the few distinct bitmaps expanded.
    # Needs a second scan for the first week; at most 64 weeks of data.
    "bitmap": f"""
WITH w0 AS (SELECT min({D_WEEK}) AS w0 FROM {{ev}}),
u AS (SELECT bit_or(1::UBIGINT << ({D_WEEK} - w0)::INT) AS b FROM {{ev}}, w0 GROUP BY user_key),
m AS (SELECT b, count(*) AS n FROM u GROUP BY b),
x AS (SELECT b, n, i FROM m, range(64) r(i) WHERE (b >> i::INT) & 1 = 1),
y AS (SELECT n, i, min(i) OVER (PARTITION BY b) AS c FROM x)
SELECT (SELECT w0 FROM w0) + c AS c, i - c AS k, sum(n) AS users FROM y GROUP BY ALL""",
}

RETENTION_CHDB = {
    # Arrays per user: distinct weeks, arrayJoin'ed relative to the first week.
    "arrays": f"""
SELECT c, k, count() AS users
FROM (SELECT min(w) AS c, groupUniqArray(w) AS ws
      FROM (SELECT user_key, {C_WEEK} AS w FROM {{ev}}) GROUP BY user_key)
ARRAY JOIN arrayMap(x -> x - c, ws) AS k GROUP BY c, k""",
    # 64-bit bitmap per user, counted per distinct bitmap (see the DuckDB variant).
    "bitmap": f"""
WITH (SELECT min({C_WEEK}) FROM {{ev}}) AS w0
SELECT c, k, sum(n) AS users FROM (
  SELECT b, count() AS n
  FROM (SELECT groupBitOr(bitShiftLeft(toUInt64(1), {C_WEEK} - w0)) AS b FROM {{ev}} GROUP BY user_key)
  GROUP BY b)
ARRAY JOIN arrayFilter(i -> bitTest(b, i), range(64)) AS i
GROUP BY w0 + bitCount(bitAnd(b, -b) - 1) AS c, w0 + i - c AS k""",
    # DISTINCT (user, week) pairs joined to each user's first week.
    "distinct_join": f"""
WITH e AS (SELECT DISTINCT user_key, {C_WEEK} AS w FROM {{ev}})
SELECT c, w - c AS k, count() AS users
FROM e JOIN (SELECT user_key, min(w) AS c FROM e GROUP BY user_key) AS f USING (user_key)
GROUP BY c, k""",
}

# Funnel: the deepest step per user, ClickHouse windowFunnel default mode, on
# second-precision timestamps (toDateTime truncates; so do the DuckDB queries).
_STEP_CONDS = ", ".join(f"event = '{e}'" for e in STEP_EVENTS)
_STEP_IN = ", ".join(f"'{e}'" for e in STEP_EVENTS)
_D_SEC = "(epoch_us(ts) // 1000000)"
_D_STEP = "CASE event " + " ".join(
    f"WHEN '{e}' THEN {i + 1}" for i, e in enumerate(STEP_EVENTS)) + " END"

FUNNEL_CHDB = {
    "windowFunnel": f"""
SELECT variant, level, count() AS users
FROM (SELECT any(variant) AS variant,
             windowFunnel({WINDOW_S})(toDateTime(ts), {_STEP_CONDS}) AS level
      FROM {{ev}} WHERE event IN ({_STEP_IN}) GROUP BY user_key)
GROUP BY variant, level""",
    # Microsecond timestamps (windowFunnel wants an unsigned integer): same counts on
    # generated data; kept to show whether truncating to seconds changes anything.
    "windowFunnel_us": f"""
SELECT variant, level, count() AS users
FROM (SELECT any(variant) AS variant,
             windowFunnel({WINDOW_S * 1_000_000})(toUInt64(toUnixTimestamp64Micro(ts)), {_STEP_CONDS}) AS level
      FROM {{ev}} WHERE event IN ({_STEP_IN}) GROUP BY user_key)
GROUP BY variant, level""",
}

# DuckDB has no windowFunnel. The exact equivalent: per user, a list of (second, step)
# packed as second * 8 + step and sorted (so ties put the earlier step first, as
# ClickHouse sorts its events), folded with list_reduce into windowFunnel's state:
# a[j] = start (step-1 second) of the latest chain that reached step j, a[4] = level.
# A step-j event extends the chain in a[j-1] when it is within the window of its start;
# the latest start is always the best one to extend, so this is windowFunnel's result.
_W = WINDOW_S
FUNNEL_DUCKDB = {
    "list_reduce": f"""
WITH u AS (
  SELECT any_value(variant) AS variant, list_sort(list({_D_SEC} * 8 + {_D_STEP})) AS xs
  FROM {{ev}} WHERE event IN ({_STEP_IN}) GROUP BY user_key),
r AS (
  SELECT variant, list_reduce(xs, lambda a, x: CASE
      WHEN x % 8 = 1 THEN [x // 8, a[2], a[3], greatest(a[4], 1)]
      WHEN a[x % 8 - 1] IS NOT NULL AND x // 8 <= a[x % 8 - 1] + {_W} THEN
        CASE x % 8 WHEN 2 THEN [a[1], a[1], a[3], greatest(a[4], 2)]
                   WHEN 3 THEN [a[1], a[2], a[2], greatest(a[4], 3)]
                   ELSE [a[1], a[2], a[3], 4] END
      ELSE a END, [NULL, NULL, NULL, 0]::BIGINT[])[4] AS level
  FROM u)
SELECT variant, level, count(*) AS users FROM r GROUP BY ALL""",
    # Same fold, list built with an ordered aggregate instead of list_sort.
    "list_reduce_ordered_agg": f"""
WITH u AS (
  SELECT any_value(variant) AS variant,
         list({_D_SEC} * 8 + {_D_STEP} ORDER BY {_D_SEC} * 8 + {_D_STEP}) AS xs
  FROM {{ev}} WHERE event IN ({_STEP_IN}) GROUP BY user_key),
r AS (
  SELECT variant, list_reduce(xs, lambda a, x: CASE
      WHEN x % 8 = 1 THEN [x // 8, a[2], a[3], greatest(a[4], 1)]
      WHEN a[x % 8 - 1] IS NOT NULL AND x // 8 <= a[x % 8 - 1] + {_W} THEN
        CASE x % 8 WHEN 2 THEN [a[1], a[1], a[3], greatest(a[4], 2)]
                   WHEN 3 THEN [a[1], a[2], a[2], greatest(a[4], 3)]
                   ELSE [a[1], a[2], a[3], 4] END
      ELSE a END, [NULL, NULL, NULL, 0]::BIGINT[])[4] AS level
  FROM u)
SELECT variant, level, count(*) AS users FROM r GROUP BY ALL""",
    # Chains by ASOF joins: from every step-1 event, the earliest next step at or after
    # the previous one (greedy earliest is optimal), kept while within the window.
    "asof": f"""
WITH e AS (SELECT user_key, variant, {_D_SEC} AS t, {_D_STEP} AS s FROM {{ev}} WHERE event IN ({_STEP_IN})),
s1 AS (SELECT DISTINCT user_key, t AS t0 FROM e WHERE s = 1),
s2 AS (SELECT DISTINCT user_key, t FROM e WHERE s = 2),
s3 AS (SELECT DISTINCT user_key, t FROM e WHERE s = 3),
s4 AS (SELECT DISTINCT user_key, t FROM e WHERE s = 4),
j2 AS (SELECT s1.user_key, t0, s2.t AS t2 FROM s1 ASOF LEFT JOIN s2 ON s1.user_key = s2.user_key AND s2.t >= s1.t0),
j3 AS (SELECT j2.user_key, t0, t2, s3.t AS t3 FROM j2 ASOF LEFT JOIN s3 ON j2.user_key = s3.user_key AND s3.t >= j2.t2
       WHERE j2.t2 <= j2.t0 + {_W}),
j4 AS (SELECT j3.user_key, t0, s4.t AS t4 FROM j3 ASOF LEFT JOIN s4 ON j3.user_key = s4.user_key AND s4.t >= j3.t3
       WHERE j3.t3 <= j3.t0 + {_W}),
lv AS (SELECT user_key, 1 AS l FROM s1
       UNION ALL SELECT user_key, 2 FROM j2 WHERE t2 <= t0 + {_W}
       UNION ALL SELECT user_key, 3 FROM j3 WHERE t3 <= t0 + {_W}
       UNION ALL SELECT user_key, 4 FROM j4 WHERE t4 <= t0 + {_W}),
u AS (SELECT user_key, max(l) AS level FROM lv GROUP BY user_key),
v AS (SELECT user_key, any_value(variant) AS variant FROM e GROUP BY user_key)
SELECT variant, level, count(*) AS users FROM u JOIN v USING (user_key) GROUP BY ALL""",
    # Running maxima with window functions: m_j = latest chain start reaching step j so
    # far, one window pass per step.
    "window": f"""
WITH e AS (SELECT user_key, variant, {_D_SEC} AS t, {_D_STEP} AS s FROM {{ev}} WHERE event IN ({_STEP_IN})),
a AS (SELECT *, max(CASE WHEN s = 1 THEN t END) OVER w AS m1 FROM e
      WINDOW w AS (PARTITION BY user_key ORDER BY t, s ROWS UNBOUNDED PRECEDING)),
b AS (SELECT *, max(CASE WHEN s = 2 AND t <= m1 + {_W} THEN m1 END) OVER w AS m2 FROM a
      WINDOW w AS (PARTITION BY user_key ORDER BY t, s ROWS UNBOUNDED PRECEDING)),
c AS (SELECT *, max(CASE WHEN s = 3 AND t <= m2 + {_W} THEN m2 END) OVER w AS m3 FROM b
      WINDOW w AS (PARTITION BY user_key ORDER BY t, s ROWS UNBOUNDED PRECEDING)),
u AS (SELECT any_value(variant) AS variant,
             CASE WHEN bool_or(s = 4 AND t <= m3 + {_W}) THEN 4 WHEN count(m3) > 0 THEN 3
                  WHEN count(m2) > 0 THEN 2 WHEN count(m1) > 0 THEN 1 ELSE 0 END AS level
      FROM c GROUP BY user_key)
SELECT variant, level, count(*) AS users FROM u GROUP BY ALL""",
}

# Segment `R<30d and F>=3` as of the end of the data (max ts over all events):
# R = floor((as_of - last purchase) / 1 day), F = purchases; users with a purchase only.
SEGMENT_DUCKDB = {
    "two_scans": f"""
WITH a AS (SELECT max(epoch_us(ts)) AS m FROM {{ev}}),
p AS (SELECT max(epoch_us(ts)) AS l, count(*) AS f FROM {{ev}} WHERE event = 'purchase' GROUP BY user_key)
SELECT count(*) AS n FROM p, a WHERE f >= 3 AND (m - l) // {DAY_US} < 30""",
    "one_scan": f"""
SELECT count(*) FILTER (WHERE f >= 3 AND (m - l) // {DAY_US} < 30) AS n FROM (
  SELECT max(epoch_us(ts)) FILTER (WHERE event = 'purchase') AS l,
         count(*) FILTER (WHERE event = 'purchase') AS f,
         max(max(epoch_us(ts))) OVER () AS m
  FROM {{ev}} GROUP BY user_key)""",
}
SEGMENT_CHDB = {
    "two_scans": f"""
WITH (SELECT max(toUnixTimestamp64Micro(ts)) FROM {{ev}}) AS m
SELECT countIf(f >= 3 AND intDiv(m - l, {DAY_US}) < 30) AS n
FROM (SELECT max(toUnixTimestamp64Micro(ts)) AS l, count() AS f
      FROM {{ev}} WHERE event = 'purchase' GROUP BY user_key)""",
}


# Paths: per user, the 5 events after the first view_item in (ts, event) order, joined
# by ' > '; users per full path (the empty path: nothing after the anchor).
PATH_ANCHOR, PATH_DEPTH = "view_item", 5
PATHS_DUCKDB = {
    # One ordered list per user, sliced after the anchor's position.
    "lists": f"""
WITH u AS (SELECT list(event ORDER BY ts, event) AS evs FROM {{ev}} GROUP BY user_key),
v AS (SELECT evs, list_position(evs, '{PATH_ANCHOR}') AS p FROM u
      WHERE list_contains(evs, '{PATH_ANCHOR}'))
SELECT array_to_string(evs[p + 1:p + {PATH_DEPTH}], ' > ') AS path, count(*) AS users
FROM v GROUP BY ALL""",
    # Row numbers per user, the anchor's, and an ordered string_agg of the next rows.
    "window": f"""
WITH r AS (SELECT user_key, event, row_number() OVER (PARTITION BY user_key ORDER BY ts, event) AS k
           FROM {{ev}}),
a AS (SELECT user_key, min(k) AS k0 FROM r WHERE event = '{PATH_ANCHOR}' GROUP BY user_key),
p AS (SELECT a.user_key, string_agg(r.event, ' > ' ORDER BY r.k) AS path
      FROM a LEFT JOIN r ON r.user_key = a.user_key AND r.k > a.k0 AND r.k <= a.k0 + {PATH_DEPTH}
      GROUP BY a.user_key)
SELECT coalesce(path, '') AS path, count(*) AS users FROM p GROUP BY ALL""",
}
PATHS_CHDB = {
    # One array of (ts, event) per user, sorted, sliced after the anchor.
    "arrays": f"""
SELECT arrayStringConcat(arraySlice(evs, p + 1, {PATH_DEPTH}), ' > ') AS path, count() AS users
FROM (SELECT arrayMap(x -> x.2, arraySort(groupArray((ts, toString(event))))) AS evs,
             indexOf(evs, '{PATH_ANCHOR}') AS p
      FROM {{ev}} GROUP BY user_key)
WHERE p > 0 GROUP BY path""",
}


def paths_tree(full):
    """{full path: users} -> {(depth, prefix): (users, drop_off)} as `tenure paths`
    reports it (every prefix up to PATH_DEPTH; drop_off: paths ending there early)."""
    out = {}
    for path, n in full.items():
        parts = path.split(" > ") if path else []
        for d in range(len(parts) + 1):
            u, x = out.get((d, " > ".join(parts[:d])), (0, 0))
            ends = d == len(parts) and d < PATH_DEPTH
            out[(d, " > ".join(parts[:d]))] = (u + n, x + (n if ends else 0))
    return out


def paths_from_sql(rows):
    full = {}
    for path, n in rows:
        full[path or ""] = full.get(path or "", 0) + int(n)
    return paths_tree(full)


def paths_from_tenure(doc):
    return {(int(r["depth"]), r["path"]): (int(r["users"]), int(r["drop_off"]))
            for r in _rows_of(doc, "paths")}


# ------------------------------------------------------------ normalisers -------------
def week_monday(w):
    return (dt.date(1970, 1, 1) + dt.timedelta(days=7 * int(w) - 3)).isoformat()


def retention_from_sql(rows):
    """rows (cohort week number, k, users) -> {(cohort date, k): (cohort_size, users)}."""
    size = {int(c): int(n) for c, k, n in rows if int(k) == 0}
    return {(week_monday(c), int(k)): (size.get(int(c)), int(n))
            for c, k, n in rows if int(n) > 0}


def _rows_of(doc, *names):
    """The list of row objects in a Tenure JSON document: a bare array, or the first
    array found under one of `names` (e.g. {"rows": [...]})."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for n in names + ("rows", "data", "result", "results"):
            if isinstance(doc.get(n), list):
                return doc[n]
    raise ValueError(f"expected a JSON array of rows, got {type(doc).__name__}")


def retention_from_tenure(doc):
    out = {}
    for r in _rows_of(doc, "cells", "retention"):
        if r.get("kind", "cohort") != "cohort":
            continue  # averages and other summary rows
        users = r.get("users")
        key = (str(r["cohort"])[:10], int(r["period"]))
        if users is None:  # an incomplete cell reported without a number
            out[key] = None
        elif int(users) > 0:
            out[key] = (int(r["cohort_size"]), int(users))
    return out


def funnel_from_levels(rows):
    """rows (group, deepest level, users) -> {(group, step): users reaching >= step}."""
    out = {}
    for g, level, n in rows:
        for s in range(1, int(level) + 1):
            k = ("" if g is None else str(g), s)
            out[k] = out.get(k, 0) + int(n)
    return {k: (v,) for k, v in out.items()}


def funnel_from_tenure(doc):
    out = {}
    for r in _rows_of(doc, "steps", "funnel"):
        if r.get("kind", "step") not in ("step", "group", "cohort"):
            continue
        g = r.get("group", r.get("variant"))
        users = int(r["users"])
        if users > 0:
            out[("" if g is None else str(g), int(r["step"]))] = (users,)
    return out


def count_from_sql(rows):
    return {("count",): (int(rows[0][0]),)}


def count_from_tenure(doc):
    def find(d):
        if isinstance(d, bool):
            return None
        if isinstance(d, int):
            return d
        if isinstance(d, dict):
            for k in ("count", "users", "n", "value"):
                if k in d and find(d[k]) is not None:
                    return find(d[k])
        if isinstance(d, list) and len(d) == 1:
            return find(d[0])
        return None

    n = find(doc)
    if n is None:
        raise ValueError(f"no count in {json.dumps(doc)[:200]}")
    return {("count",): (n,)}


# -------------------------------------------------------------- analyses --------------
class Analysis:
    def __init__(self, name, title, duckdb, chdb, tenure, from_sql, from_tenure,
                 duckdb_from_sql=None, reference="duckdb"):
        self.name, self.title = name, title
        self.queries = {"duckdb": duckdb, "chdb": chdb}
        self.tenure = tenure  # (data, threads) -> argv after the binary
        self.from_sql = {"duckdb": duckdb_from_sql or from_sql, "chdb": from_sql}
        self.from_tenure = from_tenure
        self.reference = reference  # the engine others are compared with


# Funnel with per-step limits (issue 20, item 3): `view_item, add_to_cart within 1h,
# checkout after 1m within 30m, purchase`, window 7d. Neither engine has it built in
# (windowFunnel has one window from step 1). The exact SQL: per step, every event that
# can extend some chain, with the latest step-1 time among those chains (the latest
# start leaves the most room in the window, so it is the only one worth keeping),
# joined step by step; a user's level is the deepest step with such an event.
STEPS_SPEC = "view_item, add_to_cart within 1h, checkout after 1m within 30m, purchase"
_W_US = WINDOW_S * 1_000_000


def _steps_sql(t):
    return f"""
WITH e AS (SELECT user_key, {t} AS t, event FROM {{ev}} WHERE event IN ({_STEP_IN})),
s1 AS (SELECT user_key, t, t AS st FROM e WHERE event = 'view_item'),
c AS (SELECT user_key, t FROM e WHERE event = 'add_to_cart'),
s2 AS (SELECT c.user_key AS user_key, c.t AS t, max(s1.st) AS st FROM c JOIN s1 ON c.user_key = s1.user_key
       WHERE c.t >= s1.t AND c.t <= s1.t + 3600000000 GROUP BY c.user_key, c.t),
k AS (SELECT user_key, t FROM e WHERE event = 'checkout'),
s3 AS (SELECT k.user_key AS user_key, k.t AS t, max(s2.st) AS st FROM k JOIN s2 ON k.user_key = s2.user_key
       WHERE k.t >= s2.t + 60000000 AND k.t <= s2.t + 1800000000 AND k.t <= s2.st + {_W_US}
       GROUP BY k.user_key, k.t),
p AS (SELECT user_key, t FROM e WHERE event = 'purchase'),
s4 AS (SELECT DISTINCT p.user_key AS user_key FROM p JOIN s3 ON p.user_key = s3.user_key
       WHERE p.t >= s3.t AND p.t <= s3.st + {_W_US}),
lv AS (SELECT user_key, 1 AS level FROM s1 UNION ALL SELECT user_key, 2 AS level FROM s2
       UNION ALL SELECT user_key, 3 AS level FROM s3 UNION ALL SELECT user_key, 4 AS level FROM s4)
SELECT 'all' AS g, level, count(*) AS users
FROM (SELECT user_key, max(level) AS level FROM lv GROUP BY user_key) GROUP BY level"""


FUNNEL_STEPS_DUCKDB = {"joins": _steps_sql("epoch_us(ts)")}
FUNNEL_STEPS_CHDB = {"joins": _steps_sql("toUnixTimestamp64Micro(ts)")}

ANALYSES = [
    Analysis(
        "retention", "weekly cohort retention (n-day, any event)",
        RETENTION_DUCKDB, RETENTION_CHDB,
        lambda data, t: ["retention", "--data", data, "--period", "week",
                         "--format", "json", "--threads", str(t)],
        retention_from_sql, retention_from_tenure),
    Analysis(
        "funnel", "4-step funnel, 7-day window, by variant (windowFunnel)",
        FUNNEL_DUCKDB, FUNNEL_CHDB,
        lambda data, t: ["funnel", "--data", data, "--steps", ",".join(STEP_EVENTS),
                         "--window", "7d", "--by", "variant", "--format", "json",
                         "--threads", str(t)],
        funnel_from_levels, funnel_from_tenure, reference="chdb"),
    Analysis(
        "funnel_steps", "4-step funnel, per-step windows and a minimum gap, 7-day window",
        FUNNEL_STEPS_DUCKDB, FUNNEL_STEPS_CHDB,
        lambda data, t: ["funnel", "--data", data, "--steps", STEPS_SPEC,
                         "--window", "7d", "--format", "json", "--threads", str(t)],
        funnel_from_levels, funnel_from_tenure),
    Analysis(
        "segment", "segment count R<30d and F>=3 as of end of data",
        SEGMENT_DUCKDB, SEGMENT_CHDB,
        lambda data, t: ["segment", "--data", data, "R<30d and F>=3", "--count",
                         "--format", "json", "--threads", str(t)],
        count_from_sql, count_from_tenure),
    Analysis(
        "paths", f"paths: {PATH_DEPTH} events after the first {PATH_ANCHOR}",
        PATHS_DUCKDB, PATHS_CHDB,
        lambda data, t: ["paths", "--data", data, "--after", PATH_ANCHOR, "--depth",
                         str(PATH_DEPTH), "--top", "100000000", "--format", "json",
                         "--threads", str(t)],
        paths_from_sql, paths_from_tenure),
]
BY_NAME = {a.name: a for a in ANALYSES}


# ---------------------------------------------------------------- worker --------------
def worker(args):
    """Runs inside the venv: one engine, one analysis, one query variant. Prints JSON
    {"times": [...], "rows": [...]} on stdout."""
    a = BY_NAME[args.analysis]
    sql = a.queries[args.engine][args.variant]
    glob = os.path.join(os.path.abspath(args.data), "events", "*", "*.parquet")
    if args.engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {args.threads}")
        con.execute("SET TimeZone = 'UTC'")
        q = sql.format(ev=f"read_parquet('{glob}', hive_partitioning=1)")

        def run():
            return [list(r) for r in con.execute(q).fetchall()]
    else:
        import chdb

        q = sql.format(ev=f"file('{glob}', Parquet)") + (
            f"\nSETTINGS max_threads = {args.threads}, session_timezone = 'UTC'")

        def run():
            res = chdb.query(q, "JSONCompact")
            return json.loads(res.bytes() if hasattr(res, "bytes") else str(res))["data"]

    rows = run()  # warm-up (file cache, metadata)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - t0)
    json.dump({"times": times, "rows": rows}, sys.stdout, default=str)


# ----------------------------------------------------------------- setup --------------
def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_venv(venv):
    """A Python that can import duckdb and chdb: (executable, extra environment)."""
    py = os.path.join(venv, "bin", "python")
    site = os.path.join(venv, "site")  # fallback layout: pip install --target
    probe = ["-c", "import duckdb, chdb"]
    if os.path.exists(py) and subprocess.run([py] + probe, capture_output=True).returncode == 0:
        return py, {}
    if os.path.isdir(site) and subprocess.run(
            [sys.executable] + probe, capture_output=True,
            env=dict(os.environ, PYTHONPATH=site)).returncode == 0:
        return sys.executable, {"PYTHONPATH": site}
    log(f"setting up {venv} with {' '.join(PINS)} (one time) ...")
    shutil.rmtree(venv, ignore_errors=True)
    ok = subprocess.run([sys.executable, "-m", "venv", venv]).returncode == 0
    if ok:
        pip, env = [py, "-m", "pip", "install", "--quiet"], {}
    else:  # no ensurepip (Debian without python3-venv): install into a plain folder
        log("python3 -m venv failed; installing with pip --target instead")
        pip, env = [sys.executable, "-m", "pip", "install", "--quiet", "--target", site], {"PYTHONPATH": site}
        py = sys.executable
    if subprocess.run(pip + PINS).returncode != 0:
        log("pinned versions not installable; trying the latest duckdb and chdb")
        if subprocess.run(pip + ["duckdb", "chdb"]).returncode != 0:
            sys.exit("error: could not install duckdb and chdb from PyPI")
    if subprocess.run([py] + probe, env=dict(os.environ, **env)).returncode != 0:
        sys.exit("error: duckdb/chdb installed but not importable")
    return py, env


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tenure-target")


def ensure_tenure(path):
    if path:
        if not os.access(path, os.X_OK):
            sys.exit(f"error: --tenure {path} is not an executable")
        return os.path.abspath(path)
    tgt = target_dir()
    binary = os.path.join(tgt, "release", "tenure")
    if not os.access(binary, os.X_OK):
        log(f"building {binary} (cargo build --release --bin tenure) ...")
        r = subprocess.run(["cargo", "build", "--release", "--bin", "tenure"], cwd=ROOT,
                           env=dict(os.environ, CARGO_TARGET_DIR=tgt))
        if r.returncode != 0 or not os.access(binary, os.X_OK):
            sys.exit("error: cargo build --release --bin tenure failed")
    return binary


def ensure_store(args, tenure):
    if args.data:
        if not os.path.isdir(os.path.join(args.data, "events")):
            sys.exit(f"error: {args.data} has no events/ folder (not a Tenure store?)")
        return os.path.abspath(args.data)
    base = os.path.join(HERE, "data")
    store = os.path.join(base, f"store-u{args.users}-d{args.days}-s{args.seed}")
    done = store + ".complete"  # written only after a clean `tenure gen`
    if os.path.exists(done) and not args.regen:
        log(f"reusing {store} (generated earlier; --regen to redo)")
        return store
    shutil.rmtree(store, ignore_errors=True)
    if os.path.exists(done):
        os.remove(done)
    os.makedirs(base, exist_ok=True)
    log(f"generating {args.users} users x {args.days} days (seed {args.seed}) into {store} ...")
    t0 = time.perf_counter()
    r = subprocess.run([tenure, "gen", "--users", str(args.users), "--days", str(args.days),
                        "--seed", str(args.seed), "--to", store])
    if r.returncode != 0:
        sys.exit("error: tenure gen failed")
    log(f"generated in {time.perf_counter() - t0:.1f}s")
    with open(done, "w") as f:
        f.write(f"{args.users} {args.days} {args.seed}\n")
    return store


# --------------------------------------------------------------- running --------------
def run_measured(argv, env=None, stdout_path=None):
    """Runs a process; returns (exit code, wall seconds, peak RSS MiB, stdout, stderr).
    Peak memory is this child's own (os.wait4), not the maximum over all children."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        kb = ru.ru_maxrss  # KiB on Linux
        return p.returncode, wall, kb / 1024, out.read().decode(errors="replace"), \
            err.read().decode(errors="replace")


class Result:
    def __init__(self, engine, variant, times, mib, norm=None, note=""):
        self.engine, self.variant, self.times, self.mib = engine, variant, times, mib
        self.norm, self.note = norm, note

    @property
    def median(self):
        return statistics.median(self.times) if self.times else None

    @property
    def label(self):
        return self.engine if self.variant in (None, "") else f"{self.engine}:{self.variant}"


def run_engine(a, engine, variant, store, args, py, penv):
    argv = [py, os.path.abspath(__file__), "--_worker", "--engine", engine, "--analysis", a.name,
            "--variant", variant, "--data", store, "--threads", str(args.threads),
            "--runs", str(args.runs)]
    code, _, mib, out, err = run_measured(argv, env=dict(os.environ, **penv))
    if code != 0:
        msg = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
        print(f"  {engine}:{variant}: FAILED: {msg}")
        return None
    doc = json.loads(out)
    return Result(engine, variant, doc["times"], mib, a.from_sql[engine](doc["rows"]))


def run_tenure(a, tenure, store, args):
    argv = [tenure] + a.tenure(store, args.threads)
    env = dict(os.environ, TENURE_THREADS=str(args.threads))
    code, _, _, out, err = run_measured(argv, env=env)  # warm-up
    if code != 0:
        first = next((l for l in err.strip().splitlines() if l.strip()), f"exit {code}")
        print(f"  tenure {a.name}: not available (command failed): {first[:160]}")
        return None
    times, mib = [], 0.0
    for _ in range(args.runs):
        code, wall, m, out, err = run_measured(argv, env=env)
        if code != 0:
            print(f"  tenure {a.name}: failed on a timed run (exit {code}): {err.strip()[:200]}")
            return None
        times.append(wall)
        mib = max(mib, m)
    try:
        norm = a.from_tenure(json.loads(out))
    except (ValueError, KeyError, TypeError) as e:
        print(f"  tenure {a.name}: output not understood ({e}); first bytes: {out[:200]!r}")
        return None
    return Result("tenure", "", times, mib, norm)


def differences(ref, other, limit):
    """Lines describing how `other` differs from `ref` (None values are not compared)."""
    lines, n = [], 0
    for k in sorted(set(ref) | set(other), key=lambda k: tuple(map(str, k))):
        a, b = ref.get(k, "missing"), other.get(k, "missing")
        if a is None or b is None or a == b:
            continue
        n += 1
        if len(lines) < limit:
            lines.append(f"      {k}: {a} vs {b}")
    if n > limit:
        lines.append(f"      ... {n - limit} more")
    return n, lines


def fmt_s(x):
    return "-" if x is None else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser(
        description="Compare Tenure with DuckDB and chDB on the same generated Parquet.",
        epilog="See benches/COMPARE.md.")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (default 5)")
    ap.add_argument("--data", help="reuse an existing store instead of generating one")
    ap.add_argument("--regen", action="store_true", help="regenerate the cached store")
    ap.add_argument("--tenure", help="tenure binary (default: release build under "
                    "$CARGO_TARGET_DIR or ~/.cache/tenure-target, built if missing)")
    ap.add_argument("--only", default=",".join(BY_NAME), help="comma-separated analyses "
                    f"(default: {','.join(BY_NAME)})")
    ap.add_argument("--engines", default="tenure,duckdb,chdb")
    ap.add_argument("--variants", action="store_true",
                    help="also run and check every alternative query (the rejected ones)")
    ap.add_argument("--venv", default=os.path.join(HERE, ".venv"))
    ap.add_argument("--require-tenure", action="store_true",
                    help="fail when a Tenure command is not available")
    ap.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    ap.add_argument("--diff-limit", type=int, default=10)
    # worker mode (internal)
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--analysis", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        return worker(args)

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in BY_NAME]
    engines = [s.strip() for s in args.engines.split(",") if s.strip()]
    if bad or args.runs < 1 or args.threads < 1 or set(engines) - {"tenure", "duckdb", "chdb"}:
        ap.error(f"unknown analysis {bad}" if bad else "bad --runs/--threads/--engines")

    tenure = ensure_tenure(args.tenure) if ("tenure" in engines or not args.data) else None
    store = ensure_store(args, tenure)
    py, penv = ensure_venv(os.path.abspath(args.venv))
    nfiles = sum(len(fs) for _, _, fs in os.walk(os.path.join(store, "events")))
    print(f"store {store} ({nfiles} files), threads {args.threads}, runs {args.runs} + 1 warm-up")
    if tenure:
        print(f"tenure {tenure}")

    disagree, unavailable, report = 0, [], []
    for name in only:
        a = BY_NAME[name]
        print(f"\n== {a.name}: {a.title}")
        results = []
        if "tenure" in engines:
            r = run_tenure(a, tenure, store, args)
            if r:
                results.append(r)
            else:
                unavailable.append(a.name)
        for engine in ("duckdb", "chdb"):
            if engine not in engines:
                continue
            variants = list(a.queries[engine])
            for v in variants if args.variants else variants[:1]:
                r = run_engine(a, engine, v, store, args, py, penv)
                if r:
                    results.append(r)
        # cross-check against the reference engine (first available of the preference)
        by_engine = [r for r in results if r.engine != "tenure"]
        ref = next((r for r in by_engine if r.engine == a.reference), None) or \
            (by_engine[0] if by_engine else None)
        if ref is not None:
            print(f"  reference: {ref.label} ({len(ref.norm)} rows)")
            for r in results:
                if r is ref:
                    continue
                n, lines = differences(ref.norm, r.norm, args.diff_limit)
                if n:
                    disagree += 1
                    print(f"  MISMATCH {r.label} vs {ref.label}: {n} rows differ "
                          f"(key: {ref.label} value vs {r.label} value)")
                    print("\n".join(lines))
                else:
                    print(f"  agree: {r.label} = {ref.label}")
        if a.name == "segment" and ref is not None:
            print(f"  count = {ref.norm[('count',)][0]}")
        ten = next((r for r in results if r.engine == "tenure"), None)
        others = [r for r in results if r.engine != "tenure"]
        fastest = min(others, key=lambda r: r.median) if others else None
        for r in results:
            ratio = (r.median / ten.median) if ten and r is not ten else None
            report.append({"analysis": a.name, "engine": r.label, "median_s": r.median,
                           "min_s": min(r.times), "peak_mib": r.mib, "x_tenure": ratio,
                           "tenure_vs_fastest": (ten.median / fastest.median)
                           if (ten and fastest and r is ten) else None,
                           "fastest_other": fastest.label if (ten and fastest and r is ten) else None})

    print(f"\n{'analysis':<10} {'engine':<32} {'median s':>9} {'min s':>8} {'peak MiB':>9} {'ratio':>9}")
    for row in report:
        if row["engine"] == "tenure":
            ratio = (f"{row['tenure_vs_fastest']:.2f}x {row['fastest_other']}"
                     if row["tenure_vs_fastest"] is not None else "")
        else:
            ratio = f"{row['x_tenure']:.2f}x" if row["x_tenure"] is not None else ""
        print(f"{row['analysis']:<10} {row['engine']:<32} {fmt_s(row['median_s']):>9} "
              f"{fmt_s(row['min_s']):>8} {row['peak_mib']:>9.0f} {ratio:>9}")
    print("ratio: an engine's median / Tenure's median (above 1: Tenure is faster); on the "
          "tenure row: Tenure / the fastest other engine (the target is at most 0.5).")
    print("times: DuckDB and chDB in-process query time (connection open, warm); Tenure the "
          "whole process (start, registration, query, JSON out).")
    print("peak MiB: the worker process (engine + Python) or the tenure process, from wait4.")
    for name in unavailable:
        print(f"tenure {name}: not available (command failed)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"store": store, "threads": args.threads, "runs": args.runs,
                       "results": report, "disagreements": disagree,
                       "tenure_unavailable": unavailable}, f, indent=2)
    if disagree:
        print(f"\nFAIL: {disagree} disagreement(s) between engines")
        return 1
    if args.require_tenure and unavailable:
        print(f"\nFAIL: Tenure commands not available: {', '.join(unavailable)}")
        return 1
    print("\nOK: all available engines agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
