"""Benchmarks of the feature seam on the embedded engine, each beside a floor measured in the
same run (this machine is shared and noisy: the ratios are what to compare).

- offline extraction of the seed SQL vs a hand-written DuckDB query of the same features;
- request-mode latency with many stored rows and hot IPs vs one bare SQLite range count;
- batched online inserts vs bare sqlite3 executemany into the same table layout, indexes,
  running totals (their triggers) and settings.
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import tempfile
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

import features
from core.clock import UTC8_OFFSET_MS
from features.datagen import generate_to_file, iter_click_chunks
from features.store import feature_sql, init_store

_INSERT = "INSERT INTO talkingdata VALUES (?, ?, ?, ?, ?, ?, ?)"


def _rows(chunk: Any) -> list[tuple[int, ...]]:
    wall_ms = chunk["click_time"].to_numpy().astype("datetime64[ms]").astype(np.int64)
    matrix = np.column_stack([chunk[c].to_numpy(np.int64)
                              for c in ("ip", "app", "device", "os", "channel")]
                             + [wall_ms - UTC8_OFFSET_MS,
                                chunk["is_attributed"].to_numpy(np.int64)])
    return [tuple(r) for r in matrix.tolist()]


def _handwritten_duckdb(source: str) -> str:
    lt = f"epoch_ms(click_time + {UTC8_OFFSET_MS})"
    return f"""SELECT is_attributed, app, device, os, channel, hour({lt}) AS hour,
        day({lt}) AS day,
        count(channel) OVER (PARTITION BY ip ORDER BY click_time
                             RANGE BETWEEN 3600000 PRECEDING AND CURRENT ROW) AS qty,
        count(channel) OVER (PARTITION BY ip, app ORDER BY click_time
                             RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ip_app_count,
        count(channel) OVER (PARTITION BY ip, app, os ORDER BY click_time
                             RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ip_app_os_count
        FROM {source}"""


def bench_offline(rows: int, work: Path) -> dict[str, Any]:
    """Seed SQL through the engine (validate + plan + DuckDB) vs the hand-written query."""
    data = generate_to_file(rows, work / "clicks.parquet", seed=1)
    store = work / "offline-store"
    init_store(f"embedded://{store}", "demo_db", "talkingdata", "demo")
    conn = features.connect(f"embedded://{store}", "demo_db")
    cursor = conn.cursor()
    cursor.execute(f"LOAD DATA INFILE '{data}' INTO TABLE talkingdata "
                   "OPTIONS(format='parquet', mode='overwrite')")
    out = work / "features-out"
    started = time.perf_counter()
    cursor.execute(f"{feature_sql()} INTO OUTFILE '{out}' "
                   "OPTIONS(mode='overwrite', format='parquet')")
    engine_s = time.perf_counter() - started
    parts = store / "offline" / "demo_db" / "talkingdata" / "part-*.parquet"
    duck = duckdb.connect()
    duck.execute("SET enable_progress_bar = false")
    started = time.perf_counter()
    duck.execute(f"COPY ({_handwritten_duckdb(f'read_parquet({str(parts)!r})')}) "
                 f"TO '{work / 'floor.parquet'}' (FORMAT parquet)")
    floor_s = time.perf_counter() - started
    conn.close()
    return {"rows": rows, "engine_seconds": round(engine_s, 3),
            "floor_seconds": round(floor_s, 3),
            "engine_rows_per_second": round(rows / engine_s),
            "ratio_vs_floor": round(floor_s / engine_s, 3),
            "goal": "ratio >= 0.8 (engine throughput / hand-written DuckDB throughput)"}


def bench_online(stored: int, requests: int, work: Path) -> dict[str, Any]:
    """Batched inserts of `stored` rows, then request-mode latency on hot and random IPs."""
    store = work / "online-store"
    init_store(f"embedded://{store}", "demo_db", "talkingdata", "demo")
    conn = features.connect_embedded(f"embedded://{store}", "demo_db")
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    chunks = [_rows(c) for c in iter_click_chunks(stored, seed=2, chunk_rows=100_000)]
    # The bench's own million input rows would otherwise be rescanned by every full garbage
    # collection the inserts trigger, a cost a consumer holding one batch never pays.
    gc.collect()
    gc.freeze()
    batch = 50_000
    started = time.perf_counter()
    for chunk in chunks:
        for i in range(0, len(chunk), batch):
            cursor.executemany(_INSERT, chunk[i:i + batch])
            conn.commit()
    insert_s = time.perf_counter() - started
    # the table first, then its running totals' tables, indexes and the totals' triggers
    schema_sql = [sql for (sql,) in conn.store.db.execute(
        "SELECT sql FROM sqlite_master WHERE (tbl_name = 'demo_db.talkingdata' OR "
        "tbl_name LIKE 'demo_db.talkingdata:totals:%') AND sql IS NOT NULL ORDER BY "
        "name != 'demo_db.talkingdata', CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 "
        "ELSE 2 END")]
    floor_insert_s = _raw_sqlite_insert(chunks, work / "raw.sqlite3", batch, schema_sql)
    gc.unfreeze()

    all_rows = [r for chunk in chunks for r in chunk]
    ips, counts = np.unique([r[0] for r in all_rows], return_counts=True)
    hot_ips = ips[np.argsort(counts)[-10:]].tolist()
    rng = np.random.default_rng(3)
    samples = [all_rows[i] for i in rng.integers(0, len(all_rows), requests)]
    latencies, floor_latencies = [], []
    raw = conn.store.db
    for i, sample in enumerate(samples):
        ip = hot_ips[i % len(hot_ips)] if i % 2 else sample[0]
        request = dict(zip(("ip", "app", "device", "os", "channel", "click_time",
                            "is_attributed"), (ip, *sample[1:]), strict=True))
        started = time.perf_counter()
        cursor.callproc("demo", request).fetchone()
        latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw.execute('SELECT count(*) FROM "demo_db.talkingdata" WHERE ip = ? '
                    "AND click_time BETWEEN ? AND ?",
                    (ip, sample[5] - 3_600_000, sample[5])).fetchone()
        floor_latencies.append(time.perf_counter() - started)
    conn.close()
    p50, p99 = _percentiles(latencies)
    floor_p50, floor_p99 = _percentiles(floor_latencies)
    hottest = int(counts.max())
    return {
        "insert": {"rows": stored, "batch_rows": batch, "seconds": round(insert_s, 3),
                   "rows_per_second": round(stored / insert_s),
                   "floor_rows_per_second": round(stored / floor_insert_s),
                   "ratio_vs_floor": round(floor_insert_s / insert_s, 3),
                   "goal": "rows_per_second >= 100000"},
        "request": {"stored_rows": stored, "requests": requests, "hottest_ip_rows": hottest,
                    "p50_ms": round(p50 * 1000, 3), "p99_ms": round(p99 * 1000, 3),
                    "floor_p50_ms": round(floor_p50 * 1000, 3),
                    "floor_p99_ms": round(floor_p99 * 1000, 3),
                    "floor": "one indexed SQLite range count (the 1h window alone)",
                    "goal": "p99_ms <= 2"},
    }


def _raw_sqlite_insert(chunks: list[list[tuple[int, ...]]], path: Path, batch: int,
                       schema_sql: list[str]) -> float:
    """The floor: the same rows, batches, table layout, indexes and settings through bare
    sqlite3 (rows numbered, then grouped by the clustered key, as the engine does), without the
    engine's parsing and validation."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", f"mmap_size={1 << 30}",
                   f"cache_size={-64 * 1024}", "wal_autocheckpoint=10000"):
        db.execute(f"PRAGMA {pragma}")
    for sql in schema_sql:
        db.execute(sql)
    clustered = "WITHOUT ROWID" in schema_sql[0]
    columns = "ip, app, device, os, channel, click_time, is_attributed"
    insert = (f"INSERT INTO \"demo_db.talkingdata\" ({columns}, _seq) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    by_key = itemgetter(0)  # ip
    seq = 0
    started = time.perf_counter()
    for chunk in chunks:
        for i in range(0, len(chunk), batch):
            rows = [(*row, seq + n) for n, row in enumerate(chunk[i:i + batch])]
            seq += len(rows)
            if clustered:
                rows.sort(key=by_key)
            db.execute("BEGIN")
            db.executemany(insert, rows)
            db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def _percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return statistics.median(values), cuts[98]


def run(offline_rows: int = 10_000_000, stored_rows: int = 1_000_000,
        requests: int = 5_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fraudflow-bench-") as tmp:
        work = Path(tmp)
        return {"offline_extraction": bench_offline(offline_rows, work),
                **bench_online(stored_rows, requests, work)}
