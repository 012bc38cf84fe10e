"""A corpus of queries covering what the embedded engine accepts, each run on both engines:
every aggregate over every column type, ROWS and ROWS_RANGE frames, each time unit, UNBOUNDED,
MAXSIZE, EXCLUDE CURRENT_TIME, the timestamp functions, expressions, NULLs in non-key columns
and several windows over different keys; in batch and in request mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conformance.referee import Dataset, Referee

EVENTS_DDL = """CREATE TABLE events (rid bigint, k1 int NOT NULL, k2 int NOT NULL, k3 string,
    i16 smallint, i32 int, i64 bigint, f float, x double, s string, b bool,
    ts timestamp NOT NULL, INDEX(KEY=k1, TS=ts, TTL=0m, TTL_TYPE=absolute))"""

_SECOND, _MINUTE, _HOUR, _DAY = 1000, 60_000, 3_600_000, 86_400_000
# 2017-11-06 16:08:08 UTC+8; the data runs over ~9 days so days, weeks and months change
_BASE = 1_509_955_688_000


def events(rows: int, seed: int) -> pd.DataFrame:
    """Rows in time order with many equal timestamps, gaps exactly on the window bounds, one
    hot key, keys with a single row, and NULLs in every non-key column."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0, 0, 0, 1, 999, _SECOND, _SECOND + 1, _MINUTE, _MINUTE - 1, 5 * _MINUTE,
                       _HOUR, _HOUR + 1, 2 * _HOUR, _DAY, _DAY - 1], size=rows,
                      p=[.3, .1, .05, .05, .05, .08, .04, .06, .04, .05, .05, .03, .04, .03, .03])
    ts = _BASE + np.cumsum(gaps)
    k1 = np.where(rng.random(rows) < 0.4, 1, rng.integers(2, 40, rows))  # key 1 is hot
    k1[-5:] = np.arange(1000, 1005)  # keys seen once
    frame = pd.DataFrame({
        "rid": np.arange(rows, dtype=np.int64),
        "k1": k1.astype(np.int32),
        "k2": rng.integers(0, 6, rows).astype(np.int32),
        "k3": rng.choice(["a", "b", "c"], rows),
        "i16": rng.integers(-300, 300, rows).astype(np.int16),
        "i32": rng.integers(-10**6, 10**6, rows).astype(np.int32),
        "i64": rng.integers(-10**12, 10**12, rows),
        "f": rng.integers(-4000, 4000, rows).astype(np.float32) / 8,  # exact in float32
        "x": np.round(rng.normal(0, 100, rows), 3),
        "s": rng.choice(["apple", "pear", "fig", "kiwi", ""], rows),
        "b": rng.random(rows) < 0.5,
        "ts": ts.astype(np.int64),
    })
    for column in ("k3", "i16", "i32", "i64", "f", "x", "s", "b"):
        frame[column] = frame[column].astype(object).where(rng.random(rows) > 0.1, None)
    return frame


_W = {
    "range_1h": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW",
    "range_2s": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 2s PRECEDING AND CURRENT ROW",
    "range_5m": "PARTITION BY k2 ORDER BY ts ROWS_RANGE BETWEEN 5m PRECEDING AND CURRENT ROW",
    "range_1d": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1d PRECEDING AND CURRENT ROW",
    "range_ms": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1000 PRECEDING AND CURRENT ROW",
    "range_unb": "PARTITION BY k1, k2 ORDER BY ts "
                 "ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
    "rows_3": "PARTITION BY k2 ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW",
    "rows_0": "PARTITION BY k1 ORDER BY ts ROWS BETWEEN 0 PRECEDING AND CURRENT ROW",
    "rows_unb": "PARTITION BY k1 ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
    "maxsize": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW "
               "MAXSIZE 4",
    "ect": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1m PRECEDING AND CURRENT ROW "
           "EXCLUDE CURRENT_TIME",
    "ect_maxsize": "PARTITION BY k2 ORDER BY ts ROWS_RANGE BETWEEN 1d PRECEDING AND CURRENT ROW "
                   "MAXSIZE 3 EXCLUDE CURRENT_TIME",
    "ect_unb": "PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND "
               "CURRENT ROW EXCLUDE CURRENT_TIME",
    "string_key": "PARTITION BY k3 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW",
}
_NUMERIC = ("i16", "i32", "i64", "f", "x")


def _aggregates_over(window: str) -> str:
    items = ["count(*) OVER w AS n_all"]
    for column in _NUMERIC:
        items += [f"{fn}({column}) OVER w AS {fn}_{column}"
                  for fn in ("count", "sum", "avg", "min", "max")]
    if "EXCLUDE CURRENT_TIME" not in _W[window]:  # refused there: see the test below
        items += [f"distinct_count({c}) OVER w AS dc_{c}" for c in ("i16", "k2", "s")]
    items += ["count(s) OVER w AS count_s", "count(b) OVER w AS count_b"]
    return f"SELECT rid, {', '.join(items)} FROM events WINDOW w AS ({_W[window]})"


CORPUS: dict[str, str] = {f"aggregates/{w}": _aggregates_over(w) for w in _W}
CORPUS |= {
    "timestamp functions": """SELECT rid, year(ts) AS y, month(ts) AS mo, day(ts) AS d,
        dayofmonth(ts) AS dm, hour(ts) AS h, minute(ts) AS mi, second(ts) AS se,
        dayofweek(ts) AS dw, weekofyear(ts) AS wy, dayofyear(ts) AS dy FROM events""",
    "columns and expressions": """SELECT rid, k1, k2, k3, i16, i32, i64, f, x, s, b, ts,
        i32 + i16 AS add_, i64 - i32 AS sub_, i16 * 2 AS mul_, x / 4 AS div_, i32 % 7 AS mod_,
        -x AS neg_, abs(i32) AS abs_, i32 > 0 AS gt_, i16 <= 10 AS le_, s = 'fig' AS eq_,
        i32 != i16 AS ne_, (i32 > 0 AND b) AS and_, (i16 < 0 OR b) AS or_, NOT b AS not_,
        CAST(i16 AS bigint) AS cast_big,
        CAST(i32 AS double) AS cast_dbl, x + 1.5 AS lit_, 7 AS const_ FROM events""",
    "several windows over different keys": """SELECT rid, k1, k2, hour(ts) AS h,
        count(i32) OVER w1 AS c1, sum(x) OVER w2 AS s2, max(i64) OVER w3 AS m3,
        avg(f) OVER w4 AS a4, distinct_count(k2) OVER w5 AS dc5
        FROM events WINDOW
        w1 AS (PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW),
        w2 AS (PARTITION BY k2 ORDER BY ts ROWS BETWEEN 5 PRECEDING AND CURRENT ROW),
        w3 AS (PARTITION BY k1, k2 ORDER BY ts
               ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
        w4 AS (PARTITION BY k3 ORDER BY ts ROWS_RANGE BETWEEN 10m PRECEDING AND CURRENT ROW
               EXCLUDE CURRENT_TIME),
        w5 AS (PARTITION BY k1, k3 ORDER BY ts ROWS_RANGE BETWEEN 1d PRECEDING AND CURRENT ROW
               MAXSIZE 10)""",
    # count, sum and avg over unbounded windows are answered from running totals
    # (features/totals.py): nested keys share one table, a string key can be NULL
    "unbounded windows from running totals": """SELECT rid, count(*) OVER w1 AS n1,
        count(i16) OVER w1 AS c1, sum(i32) OVER w1 AS s1, avg(i64) OVER w1 AS a1,
        count(x) OVER w1 AS cx1, count(s) OVER w1 AS cs1,
        count(*) OVER w2 AS n2, sum(i64) OVER w2 AS s2, avg(i16) OVER w2 AS a2,
        count(b) OVER w2 AS cb2, count(f) OVER w3 AS cf3, sum(i16) OVER w3 AS s3,
        avg(i32) OVER w3 AS a3, count(*) OVER w4 AS n4, sum(i32) OVER w4 AS s4
        FROM events WINDOW
        w1 AS (PARTITION BY k1 ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
        w2 AS (PARTITION BY k1, k2 ORDER BY ts
               ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
        w3 AS (PARTITION BY k2, k1 ORDER BY ts
               ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE CURRENT_TIME),
        w4 AS (PARTITION BY k1, k3 ORDER BY ts
               ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)""",
    "expressions over window aggregates": """SELECT rid,
        count(i32) OVER w + 1 AS c_plus, sum(i64) OVER w - i64 AS others,
        max(x) OVER w - min(x) OVER w AS spread, sum(x) OVER w / count(x) OVER w AS mean,
        count(i16) OVER w > 3 AS busy, hour(ts) * 100 + count(s) OVER w AS mixed
        FROM events WINDOW
        w AS (PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 30m PRECEDING AND CURRENT ROW)""",
}


@pytest.fixture(scope="module")
def corpus_data(referee: Referee) -> Dataset:
    return referee.load("corpus", EVENTS_DDL, events(2500, seed=7))


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_query_conforms(corpus_data: Dataset, name: str) -> None:
    comparison = corpus_data.compare(CORPUS[name], request_mode=True)
    print(f"{name}: {comparison.summary()}")
    comparison.assert_conforms()
    assert comparison.free_cells > 0
    assert comparison.request_rows > 0
