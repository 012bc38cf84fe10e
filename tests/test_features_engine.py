"""The feature seam on the embedded engine: OpenMLDB semantics, online = offline."""

from __future__ import annotations

import csv
import math
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features
from core.config import SAMPLE_DATA_DIR
from features.embedded import EmbeddedStore
from features.exceptions import CatalogError, DataError
from features.store import feature_sql, init_store, table_ddl

SAMPLE = SAMPLE_DATA_DIR / "train_sample.csv"
SEED_REQUEST = {"ip": 114904, "app": 11, "device": 1, "os": 15, "channel": 319,
                "click_time": 1509960088000, "is_attributed": 0}
COLUMNS = ["ip", "app", "device", "os", "channel", "click_time", "is_attributed"]


def _open(root: Path) -> Any:
    init_store(f"embedded://{root}", "demo_db", "talkingdata", "demo")
    return features.connect_embedded(f"embedded://{root}", "demo_db")


def test_seed_golden_value_on_empty_table(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    cursor = conn.cursor().callproc("demo", SEED_REQUEST)
    names = [d[0] for d in cursor.description]
    assert dict(zip(names, cursor.fetchone(), strict=True)) == {
        "is_attributed": 0, "app": 11, "device": 1, "os": 15, "channel": 319,
        "hour": 17, "day": 6, "qty": 1, "ip_app_count": 1, "ip_app_os_count": 1}
    conn.cursor().execute("SET @@execute_mode='online'")
    assert conn.cursor().execute("SELECT * FROM talkingdata").fetchall() == []  # not stored


def _stream_and_compare(conn: Any, deployment: str, table: str, rows: list[tuple],
                        csv_path: Path) -> int:
    """Request features of each row before inserting it == its offline batch features."""
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    insert = f"INSERT INTO {table} VALUES ({', '.join('?' for _ in rows[0])})"
    online = []
    for row in rows:
        online.append(cursor.callproc(deployment, row).fetchone())
        cursor.executemany(insert, [row])  # same transaction: visible to the next request
    conn.commit()
    cursor.execute("SET @@execute_mode='offline'")
    cursor.execute(f"LOAD DATA INFILE '{csv_path}' INTO TABLE {table} "
                   "OPTIONS(format='csv', header=true, mode='overwrite')")
    sql = conn.store.execute(f"SHOW DEPLOYMENTS", conn.session)  # noqa: F541 - smoke
    assert deployment in [r[1] for r in sql.rows]
    body = conn.store._catalog_get("deployment", conn.session.db, deployment)
    offline = cursor.execute(body["sql"]).fetchall()
    assert len(offline) == len(online)
    mismatches = [(i, rows[i], a, b) for i, (a, b) in enumerate(zip(online, offline,
                                                                   strict=True))
                  if not _same_row(a, b)]
    assert not mismatches[:5], mismatches[:5]
    return len(online)


def _fresh_database(root: Path) -> features.EmbeddedConnection:
    """A connection to a new embedded store at root, with database `db` created and used."""
    conn = features.connect_embedded(f"embedded://{root}", "db")
    conn.cursor().execute("CREATE DATABASE db")
    conn.cursor().execute("USE db")
    return conn


def _same_row(online: tuple, offline: tuple) -> bool:
    """Equal, except that sums of doubles may differ in the last bits: the engines add the
    same values in different orders."""
    return len(online) == len(offline) and all(
        a == b or (isinstance(a, float) and isinstance(b, float)
                   and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12))
        for a, b in zip(online, offline, strict=True))


def test_real_sample_online_equals_offline(tmp_path: Path) -> None:
    conn = _open(tmp_path / "store")
    with SAMPLE.open() as f:
        reader = csv.DictReader(f)
        sample = [{k: row[k] for k in COLUMNS} for row in reader]
    rows = [tuple(int(r[c]) if c != "click_time" else r[c] for c in COLUMNS) for r in sample]
    # The string timestamps are read as UTC+8 on both paths.
    assert _stream_and_compare(conn, "demo", "talkingdata", rows, SAMPLE) == 10_000


# Both online layouts: a NOT NULL index key and ts make the table clustered by that index.
PROPERTY_TABLES = {
    "clustered": "CREATE TABLE events (k1 int NOT NULL, k2 int, v int, w double, "
                 "ts timestamp NOT NULL, INDEX(KEY=k1, TS=ts, TTL=0m, TTL_TYPE=absolute))",
    "rowid": "CREATE TABLE events (k1 int, k2 int, v int, w double, ts timestamp, "
             "INDEX(KEY=k1, TS=ts, TTL=0m, TTL_TYPE=absolute))",
}
PROPERTY_SQL = """SELECT k1, k2, v, hour(ts) AS h, dayofweek(ts) AS dow,
  count(v) OVER w1 AS c1, sum(v) OVER w1 AS s1, avg(w) OVER w1 AS a1, min(v) OVER w1 AS mn1,
  max(w) OVER w1 AS mx1, distinct_count(k2) OVER w1 AS dc1,
  count(v) OVER w2 AS c2, sum(w) OVER w2 AS s2, distinct_count(v) OVER w2 AS dc2,
  count(v) OVER w3 AS c3, max(v) OVER w3 AS mx3,
  count(v) OVER w4 AS c4, sum(v) OVER w4 AS s4, min(w) OVER w4 AS mn4, avg(v) OVER w4 AS a4,
  count(v) OVER w5 AS c5, sum(v) OVER w5 AS s5
FROM events WINDOW
  w1 AS (PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW),
  w2 AS (PARTITION BY k1, k2 ORDER BY ts ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
  w3 AS (PARTITION BY k2 ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW),
  w4 AS (PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 2s PRECEDING AND CURRENT ROW
         EXCLUDE CURRENT_TIME),
  w5 AS (PARTITION BY k2 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW
         MAXSIZE 3)"""

_HOUR = 3_600_000
_BASE = 1_509_960_088_000
_offsets = st.sampled_from([0, 0, 0, 1, 999, 1000, 2000, 2001, _HOUR - 1, _HOUR, _HOUR + 1,
                            2 * _HOUR, 86_400_000])
_event = st.tuples(
    st.sampled_from([1, 1, 1, 1, 2, 3, 7]),  # k1: one hot key
    st.integers(0, 3),  # k2
    st.one_of(st.none(), st.integers(-5, 5)),  # v, with nulls
    st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 3)),
    _offsets,
)


@pytest.mark.parametrize("layout", list(PROPERTY_TABLES))
@pytest.mark.parametrize("order_key", ["one sort key", "fallback plan"])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_event, min_size=1, max_size=40))
def test_property_streams_online_equal_offline(tmp_path_factory: pytest.TempPathFactory,
                                               monkeypatch: pytest.MonkeyPatch,
                                               order_key: str, layout: str,
                                               events: list[tuple]) -> None:
    if order_key == "fallback plan":  # the plan for time spans × row counts over 63 bits
        monkeypatch.setattr(EmbeddedStore, "_order_keys", lambda *_: {})
    root = tmp_path_factory.mktemp("prop")
    conn = _fresh_database(root / "store")
    cursor = conn.cursor()
    cursor.execute(PROPERTY_TABLES[layout])
    cursor.execute(f"DEPLOY d {PROPERTY_SQL}")
    # time order with many equal timestamps; each gap an offset from the strategy
    rows, ts = [], _BASE
    for k1, k2, v, w, gap in events:
        ts += gap
        rows.append((k1, k2, v, w, ts))
    csv_path = root / "events.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["k1", "k2", "v", "w", "ts"])
        writer.writerows([["" if x is None else x for x in row] for row in rows])
    _stream_and_compare(conn, "d", "events", rows, csv_path)


# Unbounded windows answered from running totals (features/totals.py): nested keys share one
# totals table, ROWS and ROWS_RANGE, EXCLUDE CURRENT_TIME, count(*), NULL values and keys.
TOTALS_SQL = """SELECT k1, k2, count(*) OVER w1 AS n1, count(v) OVER w1 AS c1,
  sum(v) OVER w1 AS s1, avg(v) OVER w1 AS a1, count(w) OVER w2 AS c2, sum(v) OVER w2 AS s2,
  count(v) OVER w3 AS c3, avg(v) OVER w3 AS a3{twin}
FROM events WINDOW
  w1 AS (PARTITION BY k1, k2 ORDER BY ts ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
  w2 AS (PARTITION BY k1 ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
  w3 AS (PARTITION BY k2, k1 ORDER BY ts ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
         EXCLUDE CURRENT_TIME)"""
# min() is not kept in totals: the twin deployment reads every window's rows
TOTALS_TWIN = ", min(v) OVER w1 AS m1, min(v) OVER w2 AS m2, min(v) OVER w3 AS m3"
_totals_event = st.tuples(
    st.sampled_from([1, 1, 1, 2, 3, None]),  # k1 (NULL only where the layout allows it)
    st.sampled_from([0, 0, 1, 2, None]),  # k2
    st.one_of(st.none(), st.integers(-5, 5)),  # v
    st.one_of(st.none(), st.floats(-10, 10, allow_nan=False)),  # w
    st.sampled_from([0, 0, 1, 999, _HOUR, 86_400_000]),
)


@pytest.mark.parametrize("layout", list(PROPERTY_TABLES))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_totals_event, min_size=1, max_size=40), data=st.data())
def test_property_running_totals_equal_reading_the_rows(
        tmp_path_factory: pytest.TempPathFactory, layout: str, events: list[tuple],
        data: st.DataObject) -> None:
    """Rows stored before DEPLOY (totals made from them) and after (kept by the trigger);
    requests at any time (newer than every row, older than every row, between: each way
    of reading totals): the same features as the twin deployment, which reads the rows."""
    root = tmp_path_factory.mktemp("totals")
    conn = _fresh_database(root / "store")
    cursor = conn.cursor()
    cursor.execute(PROPERTY_TABLES[layout])
    cursor.execute("SET @@execute_mode='online'")
    rows, ts = [], _BASE
    for k1, k2, v, w, gap in events:
        ts += gap
        # the rowid layout allows rows without a time: they are in no window
        no_time = layout == "rowid" and w is None and v is None
        rows.append((1 if k1 is None and layout == "clustered" else k1, k2, v, w,
                     None if no_time else ts))
    rows = data.draw(st.permutations(rows))  # stored out of time order too
    before = data.draw(st.integers(0, len(rows)))
    insert = "INSERT INTO events VALUES (?, ?, ?, ?, ?)"
    if before:
        cursor.executemany(insert, rows[:before])
        conn.commit()
    cursor.execute(f"DEPLOY totals {TOTALS_SQL.format(twin='')}")
    cursor.execute(f"DEPLOY twin {TOTALS_SQL.format(twin=TOTALS_TWIN)}")
    assert set(conn.store._plan("db", "totals")[0].totals) == {"w1", "w2", "w3"}
    assert not conn.store._plan("db", "twin")[0].totals
    if rows[before:]:
        cursor.executemany(insert, rows[before:])
        conn.commit()
    times = sorted({r[4] for r in rows if r[4] is not None}) or [_BASE]
    requests = data.draw(st.lists(st.tuples(
        st.sampled_from([r[0] for r in rows]), st.sampled_from([r[1] for r in rows]),
        st.one_of(st.none(), st.integers(-5, 5)), st.none(),
        st.sampled_from([times[0] - 1, *times, times[-1] + 1])), min_size=1, max_size=10))
    for request in requests:
        totals = cursor.callproc("totals", request).fetchone()
        twin = cursor.callproc("twin", request).fetchone()
        assert totals is not None and twin is not None
        assert totals == twin[:len(totals)], (request, rows)


def test_dropping_a_table_drops_its_totals(tmp_path: Path) -> None:
    conn = _fresh_database(tmp_path)
    cursor = conn.cursor()
    for rows in ([(1, 1, 1, 0.0, _BASE)] * 3, []):
        cursor.execute(PROPERTY_TABLES["clustered"])
        cursor.execute(f"DEPLOY totals {TOTALS_SQL.format(twin='')}")
        cursor.execute("SET @@execute_mode='online'")
        if rows:
            cursor.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
            conn.commit()
        request = (1, 1, 1, 0.0, _BASE + 1)
        features_row = cursor.callproc("totals", request).fetchone()
        assert features_row is not None and features_row[2] == len(rows) + 1  # n1
        cursor.execute("DROP DEPLOYMENT totals")
        cursor.execute("DROP TABLE events")


@pytest.mark.parametrize("layout", list(PROPERTY_TABLES))
def test_one_batch_keeps_arrival_order_for_equal_timestamps(tmp_path: Path,
                                                            layout: str) -> None:
    """A clustered table inserts each batch in key order; rows with equal timestamps must
    still count in arrival order, for windows over its key and over other columns."""
    conn = features.connect_embedded(f"embedded://{tmp_path}", "db")
    cursor = conn.cursor()
    cursor.execute("CREATE DATABASE db")
    cursor.execute("USE db")
    cursor.execute(PROPERTY_TABLES[layout])
    cursor.execute("""DEPLOY d SELECT k1,
        sum(v) OVER by_k2 AS last_of_k2, sum(v) OVER by_k1 AS last_two_of_k1 FROM events WINDOW
        by_k2 AS (PARTITION BY k2 ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
        by_k1 AS (PARTITION BY k1 ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)""")
    cursor.execute("SET @@execute_mode='online'")
    # keys arrive out of key order, all at one timestamp; v numbers the arrival
    cursor.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                       [(k1, 0, v, 0.0, _BASE) for v, k1 in enumerate([9, 3, 7, 3, 1, 9, 5])])
    conn.commit()
    request = {"k1": 3, "k2": 0, "v": 100, "w": 0.0, "ts": _BASE}
    assert cursor.callproc("d", request).fetchone() == (3, 6 + 100, 1 + 3 + 100)
    rows = cursor.execute("SELECT v FROM events").fetchall()
    assert [r[0] for r in rows] == list(range(7))  # storage order, as OpenMLDB returns it


def test_clustered_table_rejects_null_keys_and_rowid_table_keeps_them(tmp_path: Path) -> None:
    conn = features.connect_embedded(f"embedded://{tmp_path}", "db")
    cursor = conn.cursor()
    cursor.execute("CREATE DATABASE db")
    cursor.execute("USE db")
    cursor.execute(PROPERTY_TABLES["clustered"])
    cursor.execute(PROPERTY_TABLES["rowid"].replace("events", "nullable"))
    cursor.execute("DEPLOY d SELECT k1, count(v) OVER w AS n FROM nullable WINDOW "
                   "w AS (PARTITION BY k1 ORDER BY ts ROWS_RANGE BETWEEN 1h PRECEDING "
                   "AND CURRENT ROW)")
    cursor.execute("SET @@execute_mode='online'")
    with pytest.raises(DataError, match="column k1 is NOT NULL"):
        cursor.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                           [(None, 0, 1, 0.0, _BASE)])
    with pytest.raises(DataError, match="NOT NULL column"):
        cursor.executemany("INSERT INTO events (k2, v, w, ts) VALUES (?, ?, ?, ?)",
                           [(0, 1, 0.0, _BASE)])
    cursor.executemany("INSERT INTO nullable VALUES (?, ?, ?, ?, ?)",
                       [(None, 0, 1, 0.0, _BASE), (None, 0, 2, 0.0, _BASE)])
    conn.commit()
    request = {"k1": None, "k2": 0, "v": 3, "w": 0.0, "ts": _BASE}
    assert cursor.callproc("d", request).fetchone() == (None, 3)  # nulls form one partition


def test_exact_hour_boundary_is_inside_the_window(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    base = dict(SEED_REQUEST)
    cursor.executemany("INSERT INTO talkingdata VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [tuple(base.values())])
    conn.commit()
    at_boundary = {**base, "click_time": base["click_time"] + _HOUR}
    past_boundary = {**base, "click_time": base["click_time"] + _HOUR + 1}
    qty = [d[0] for d in cursor.callproc("demo", at_boundary).description].index("qty")
    assert cursor.callproc("demo", at_boundary).fetchone()[qty] == 2
    assert cursor.callproc("demo", past_boundary).fetchone()[qty] == 1


def test_compiler_rejects_invalid_sql_with_its_message(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    cursor = conn.cursor()
    with pytest.raises(features.SQLValidationError, match="Fail to find column nope"):
        cursor.execute("SELECT nope FROM talkingdata")
    with pytest.raises(features.SQLValidationError, match="Fail to resolve expression"):
        cursor.execute("DEPLOY bad SELECT no_such_fn(ip) FROM talkingdata")


@pytest.mark.parametrize("sql, construct", [
    ("UPDATE talkingdata SET ip = 1", "'UPDATE'"),
    ("SELECT ip FROM talkingdata GROUP BY ip", "GROUP"),
    ("SELECT ip FROM talkingdata LAST JOIN t2 ON talkingdata.ip = t2.ip", "joins"),
    ("SET @@no_such_var = 1", "SET @@no_such_var"),
    ("DELETE FROM talkingdata WHERE ip = 1", "'DELETE'"),
    ("SELECT distinct_count(app) OVER w AS d FROM talkingdata WINDOW w AS (PARTITION BY ip "
     "ORDER BY click_time ROWS_RANGE BETWEEN 1h PRECEDING AND CURRENT ROW EXCLUDE CURRENT_TIME)",
     "EXCLUDE CURRENT_TIME"),
])
def test_unsupported_statements_get_a_clear_error(tmp_path: Path, sql: str,
                                                  construct: str) -> None:
    conn = _open(tmp_path)
    with pytest.raises(features.UnsupportedStatementError, match=construct):
        conn.cursor().execute(sql)


def test_distinct_count_counts_null_as_zero_and_refuses_unmeasured_types(
        tmp_path: Path) -> None:
    """OpenMLDB's batch engine counts a NULL as its type's zero (0, ''), measured by `make
    conformance`; for types where that stand-in is not measured the engine refuses."""
    conn = features.connect(f"embedded://{tmp_path}", "db")
    cursor = conn.cursor()
    cursor.execute("CREATE DATABASE db")
    cursor.execute("USE db")
    cursor.execute("CREATE TABLE t (k int, v int, s string, b bool, ts timestamp, "
                   "INDEX(KEY=k, TS=ts, TTL=0m, TTL_TYPE=absolute))")
    window = " FROM t WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED " \
             "PRECEDING AND CURRENT ROW)"
    cursor.execute(f"DEPLOY d SELECT distinct_count(v) OVER w AS dv, "
                   f"distinct_count(s) OVER w AS ds{window}")
    cursor.execute("SET @@execute_mode='online'")
    rows = [(1, 0, "", None, 1000), (1, None, None, None, 2000), (1, 5, "x", None, 3000)]
    got = []
    for row in rows:
        got.append(cursor.callproc("d", row).fetchone())
        cursor.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", [row])
    assert got == [(1, 1), (1, 1), (2, 2)]  # NULL is 0 / '' seen before
    cursor.execute("SET @@execute_mode='offline'")
    with pytest.raises(features.UnsupportedStatementError, match="nullable bool column b"):
        cursor.execute(f"SELECT distinct_count(b) OVER w AS db{window}")


def test_bad_rows_are_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    insert = "INSERT INTO talkingdata VALUES (?, ?, ?, ?, ?, ?, ?)"
    good = tuple(SEED_REQUEST.values())
    with pytest.raises(DataError, match="ip"):
        cursor.executemany(insert, [good, ("x", 1, 1, 1, 1, 1, 0)])
    with pytest.raises(DataError, match="out of range"):
        cursor.executemany(insert, [(2**31, 1, 1, 1, 1, 1, 0)])
    with pytest.raises(DataError, match="expects 7"):
        cursor.executemany(insert, [(1, 2)])
    conn.commit()
    assert cursor.execute("SELECT * FROM talkingdata").fetchall() == []


def test_rows_are_durable_only_after_commit(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    cursor.executemany("INSERT INTO talkingdata VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [tuple(SEED_REQUEST.values())])
    other = features.connect(f"embedded://{tmp_path}", "demo_db")
    other.cursor().execute("SET @@execute_mode='online'")
    assert other.cursor().execute("SELECT ip FROM talkingdata").fetchall() == []
    conn.commit()
    reader = other.cursor()
    reader.execute("SET @@execute_mode='online'")
    assert reader.execute("SELECT ip FROM talkingdata").fetchall() == [(114904,)]


def test_ttl_hides_and_expires_old_rows(tmp_path: Path) -> None:
    conn = features.connect_embedded(f"embedded://{tmp_path}", "db")
    cursor = conn.cursor()
    cursor.execute("CREATE DATABASE db")
    cursor.execute("USE db")
    cursor.execute("CREATE TABLE t (k int, ts timestamp, "
                   "INDEX(KEY=k, TS=ts, TTL=10m, TTL_TYPE=absolute))")
    # the 5m window needs a 5m TTL; the table's 10m index already keeps that long
    cursor.execute("DEPLOY d SELECT k, count(k) OVER w AS n FROM t WINDOW w AS "
                   "(PARTITION BY k ORDER BY ts ROWS_RANGE BETWEEN 5m PRECEDING AND CURRENT ROW)")
    assert conn.store.table("db", "t").indexes[0].ttl_minutes == 10
    cursor.execute("SET @@execute_mode='online'")
    now = 1_700_000_000_000
    cursor.executemany("INSERT INTO t VALUES (?, ?)",
                       [(1, now - 20 * 60_000), (1, now - 5 * 60_000), (1, now - 60_000)])
    conn.commit()
    store = conn.store
    # the window: rows at now-5m (on the boundary) and now-1m, plus the request row
    assert store.request("db", "d", {"k": 1, "ts": now}, now_ms=now).rows == [(1, 3)]
    # 15 minutes later the index's 10m TTL hides every stored row from the same request
    assert store.request("db", "d", {"k": 1, "ts": now}, now_ms=now + 15 * 60_000).rows == \
        [(1, 1)]
    assert store.expire("db", "t", now_ms=now) == 1
    conn.commit()
    assert len(cursor.execute("SELECT * FROM t").fetchall()) == 2


def test_a_cached_plan_follows_catalog_changes_of_another_connection(tmp_path: Path) -> None:
    serving, admin = _open(tmp_path), _open(tmp_path)
    request = {**SEED_REQUEST, "ip": 7}
    cursor = admin.cursor()
    cursor.execute("SET @@execute_mode='online'")
    cursor.executemany(
        "INSERT INTO talkingdata VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(7, 11, 1, 15, 319, SEED_REQUEST["click_time"] - 1000, 0)] * 3)
    admin.commit()
    assert serving.cursor().callproc("demo", request).fetchone()[-3:] == (4, 4, 4)
    cursor.execute("DROP DEPLOYMENT demo")
    with pytest.raises(CatalogError, match="does not exist"):
        serving.cursor().callproc("demo", request)  # not the plan made before the drop
    cursor.execute("DEPLOY demo SELECT ip, count(channel) OVER w AS n FROM talkingdata WINDOW "
                   "w AS (PARTITION BY ip ORDER BY click_time ROWS BETWEEN 1 PRECEDING AND "
                   "CURRENT ROW)")
    reply = serving.cursor().callproc("demo", request)
    assert [column[0] for column in reply.description] == ["ip", "n"]
    assert reply.fetchone() == (7, 2)  # the request row and the one stored before it


def test_deploy_creates_the_indexes_genddl_suggests_and_is_rerun_safe(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    table = conn.store.table("demo_db", "talkingdata")
    assert {tuple(sorted(i.keys)) for i in table.indexes} == {
        ("ip",), ("app", "ip"), ("app", "ip", "os")}
    init_store(f"embedded://{tmp_path}", "demo_db", "talkingdata", "demo")  # no error
    with pytest.raises(CatalogError, match="already exists"):
        conn.cursor().execute(f"DEPLOY demo {feature_sql()}")
    conn.cursor().execute(f"DEPLOY IF NOT EXISTS demo {feature_sql()}")


def test_load_data_parquet_and_outfile(tmp_path: Path) -> None:
    conn = _open(tmp_path / "store")
    cursor = conn.cursor()
    cursor.execute(f"LOAD DATA INFILE '{SAMPLE}' INTO TABLE talkingdata "
                   "OPTIONS(format='csv', header=true, mode='append')")
    out = tmp_path / "features"
    cursor.execute(f"{feature_sql()} INTO OUTFILE '{out}' OPTIONS(mode='overwrite', "
                   "format='parquet')")
    cursor.execute(f"SELECT * FROM talkingdata INTO OUTFILE '{tmp_path / 'copy'}' "
                   "OPTIONS(format='parquet')")
    cursor.execute("CREATE TABLE copy (ip int, app int, device int, os int, channel int, "
                   "click_time timestamp, is_attributed int)")
    cursor.execute(f"LOAD DATA INFILE '{tmp_path / 'copy'}/*.parquet' INTO TABLE copy "
                   "OPTIONS(format='parquet', mode='overwrite')")
    original = cursor.execute("SELECT * FROM talkingdata").fetchall()
    assert cursor.execute("SELECT * FROM copy").fetchall() == original
    assert cursor.execute("SELECT count(*) AS n FROM copy").fetchall() == [(10_000,)]
    import pandas as pd

    assert len(pd.read_parquet(out)) == 10_000
    with pytest.raises(CatalogError, match="error_if_exists"):
        cursor.execute(f"SELECT * FROM talkingdata INTO OUTFILE '{tmp_path / 'copy'}'")
    with pytest.raises(DataError, match="no such file"):
        cursor.execute("LOAD DATA INFILE '/nonexistent.csv' INTO TABLE copy")


def _writer(root: str, batches: int) -> None:
    conn = features.connect(f"embedded://{root}", "demo_db")
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    for i in range(batches):
        cursor.executemany("INSERT INTO talkingdata VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(7, 1, 1, 1, 1, _BASE + i * 100 + j, 0) for j in range(100)])
        conn.commit()


def _reader(root: str, results: Any) -> None:
    conn = features.connect(f"embedded://{root}", "demo_db")
    cursor = conn.cursor()
    seen = []
    for _ in range(200):
        row = cursor.callproc("demo", {**SEED_REQUEST, "ip": 7, "app": 1,
                                       "click_time": _BASE + 10**9}).fetchone()
        seen.append(row[-2])  # ip_app_count
    results.put(seen)


def test_concurrent_writer_and_request_readers(tmp_path: Path) -> None:
    _open(tmp_path).close()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(tmp_path), 50))
    readers = [ctx.Process(target=_reader, args=(str(tmp_path), results)) for _ in range(2)]
    for proc in (writer, *readers):
        proc.start()
    seen = [results.get(timeout=120) for _ in readers]
    for proc in (writer, *readers):
        proc.join(timeout=120)
        assert proc.exitcode == 0
    for counts in seen:
        assert counts == sorted(counts)  # each commit is seen whole, never partly
        assert all((c - 1) % 100 == 0 for c in counts)
    final = _open(tmp_path).cursor().callproc(
        "demo", {**SEED_REQUEST, "ip": 7, "app": 1, "click_time": _BASE + 10**9}).fetchone()
    assert final[-2] == 50 * 100 + 1


def test_table_ddl_matches_the_seed() -> None:
    assert "click_time TIMESTAMP" in table_ddl()


def _init(root: str) -> None:
    init_store(f"embedded://{root}", "demo_db", "talkingdata", "demo")


def test_processes_initialising_one_store_together_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_init, args=(str(tmp_path),)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    conn = features.connect(f"embedded://{tmp_path}", "demo_db")
    assert [r[1] for r in conn.cursor().execute("SHOW DEPLOYMENTS").fetchall()] == ["demo"]
