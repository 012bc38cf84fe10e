"""Offline extraction of the seed SQL (INTO OUTFILE, parquet) on both offline executors over
the same stored rows: FraudFlow's embedded engine (DuckDB) and OpenMLDB's own batch engine
(Spark local mode). Each executor runs in a fresh child process, so its peak RSS is its own;
for Spark the JVM's peak is reported too (it does the work). The Spark session's start-up is
reported apart from the query.

`python -m benchmarks.offline_executors <executor> <store dir> <out dir>` is the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import features
from features.datagen import generate_to_file
from features.store import feature_sql, init_store

SPARK_MASTER = "local[2]"  # the machine's two cores
SPARK_DRIVER_MEMORY = "4g"


def _peak_rss_bytes(pid: int | str = "self") -> int:
    """VmHWM (peak resident set) of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _child(executor: str, store: Path, out: Path) -> dict[str, Any]:
    """Run the extraction once in this process; what it cost."""
    result: dict[str, Any] = {}
    engine = None
    if executor == "spark":
        from components.spark import runtime

        began = time.perf_counter()
        # started here to time it apart; the store's executor then uses this session
        engine = runtime.shared_engine(SPARK_MASTER, driver_memory=SPARK_DRIVER_MEMORY)
        result["session_seconds"] = round(time.perf_counter() - began, 2)
    conn = features.connect(f"embedded://{store}", "demo_db", offline_executor=executor,
                            spark_master=SPARK_MASTER)
    cursor = conn.cursor()
    began = time.perf_counter()
    cursor.execute(f"{feature_sql()} INTO OUTFILE '{out}' "
                   "OPTIONS(mode='overwrite', format='parquet')")
    result["seconds"] = round(time.perf_counter() - began, 3)
    conn.close()
    result["python_peak_rss_bytes"] = _peak_rss_bytes()
    if engine is not None:
        jvm_pid = int(engine.spark._jvm.java.lang.ProcessHandle.current().pid())
        result["jvm_peak_rss_bytes"] = _peak_rss_bytes(jvm_pid)
        engine.stop()
    return result


def _run_child(executor: str, store: Path, out: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.offline_executors", executor,
                           str(store), str(out)], capture_output=True, text=True, check=False,
                          env={**os.environ, "GLOG_minloglevel": "2"})
    if proc.returncode != 0:
        raise RuntimeError(f"the {executor} extraction failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def bench_size(rows: int, work: Path) -> dict[str, Any]:
    data = generate_to_file(rows, work / f"clicks-{rows}.parquet", seed=1)
    store = work / f"store-{rows}"
    init_store(f"embedded://{store}", "demo_db", "talkingdata", "demo")
    conn = features.connect(f"embedded://{store}", "demo_db")
    conn.cursor().execute(f"LOAD DATA INFILE '{data}' INTO TABLE talkingdata "
                          "OPTIONS(format='parquet', mode='overwrite')")
    conn.close()
    data.unlink()
    result: dict[str, Any] = {"rows": rows}
    for executor in ("embedded", "spark"):
        out = work / f"out-{executor}-{rows}"
        measured = _run_child(executor, store, out)
        written = sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet"))
        if written != rows:
            raise RuntimeError(f"the {executor} executor wrote {written} rows of {rows}")
        measured["rows_per_second"] = round(rows / measured["seconds"])
        result[executor] = measured
    result["ratio_spark_vs_embedded"] = round(
        result["spark"]["rows_per_second"] / result["embedded"]["rows_per_second"], 4)
    return result


def run(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fraudflow-bench-executors-") as tmp:
        return {"offline_executors": {f"rows_{rows}": bench_size(rows, Path(tmp))
                                      for rows in sizes},
                "spark": {"master": SPARK_MASTER, "driver_memory": SPARK_DRIVER_MEMORY}}


if __name__ == "__main__":
    executor_name, store_dir, out_dir = sys.argv[1:4]
    print(json.dumps(_child(executor_name, Path(store_dir), Path(out_dir))))
