"""FRAUDFLOW_OFFLINE_EXECUTOR=spark: offline SELECT and INTO OUTFILE of an embedded store run on
OpenMLDB's batch engine, through the CLI and the workflow's extract step; its errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from components.exceptions import SparkError
from components.spark import runtime
from core.config import Settings
from core.ports import free_port
from fraudflow.cli import main
from tests.workflow_helpers import SAMPLES, settings_in
from workflows.sql import create_table_sql, extract_sql, run_script

SAMPLE = SAMPLES / "train_sample_days.csv"  # no two clicks of one ip share a second


def _store(root: Path) -> Settings:
    settings = settings_in(root)
    run_script(settings, "offline", create_table_sql(settings))
    run_script(settings, "offline", f"LOAD DATA INFILE '{SAMPLE}' INTO TABLE talkingdata "
               "OPTIONS(format='csv', header=true, mode='overwrite')")
    return settings


def _features(folder: Path) -> pd.DataFrame:
    frame = pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pandas()
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_extract_step_on_spark_writes_what_the_embedded_engine_writes(
        tmp_path: Path, batch_engine: runtime.BatchEngine) -> None:
    settings = _store(tmp_path)
    on_spark = dataclasses.replace(settings, offline_executor="spark",
                                   spark_master=batch_engine.master)
    run_script(on_spark, "offline", extract_sql(on_spark, str(tmp_path / "spark")))
    run_script(settings, "offline", extract_sql(settings, str(tmp_path / "embedded")))
    spark, embedded = _features(tmp_path / "spark"), _features(tmp_path / "embedded")
    assert len(spark) == 10_000
    assert list(spark.dtypes) == list(embedded.dtypes)  # click_time as epoch ms in both
    pd.testing.assert_frame_equal(spark, embedded)
    with pytest.raises(Exception, match="already has data"):
        run_script(on_spark, "offline", extract_sql(on_spark, str(tmp_path / "spark"))
                   .replace("mode='overwrite'", "mode='error_if_exists'"))


def test_cli_offline_select_runs_on_spark(tmp_path: Path,
                                          batch_engine: runtime.BatchEngine,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _store(tmp_path)
    monkeypatch.setenv("FRAUDFLOW_STORE_URL", settings.store_url)
    monkeypatch.setenv("FRAUDFLOW_OFFLINE_EXECUTOR", "spark")
    monkeypatch.setenv("FRAUDFLOW_SPARK_MASTER", batch_engine.master)
    monkeypatch.setattr("core.config._loaded", None)  # settings are read once per process
    result = CliRunner().invoke(main, [
        "sql", "--mode", "offline", "SELECT ip, count(app) OVER w AS n FROM talkingdata "
        "WINDOW w AS (PARTITION BY ip ORDER BY click_time "
        "ROWS_RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "ip\tn"
    assert len(lines) == 10_001
    busiest = Counter(line.split("\t")[0] for line in lines[1:]).most_common(1)[0]
    counts = sorted(int(line.split("\t")[1]) for line in lines[1:]
                    if line.startswith(f"{busiest[0]}\t"))
    assert counts == list(range(1, busiest[1] + 1))  # 1, 2, … per click of the busiest ip


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraudflow", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120, check=False)


def test_unreachable_master_and_unknown_executor_are_one_line_errors(tmp_path: Path) -> None:
    settings = _store(tmp_path)
    master = f"spark://127.0.0.1:{free_port()}"  # nothing listens there
    proc = _cli({"FRAUDFLOW_STORE_URL": settings.store_url, "FRAUDFLOW_OFFLINE_EXECUTOR": "spark",
                 "FRAUDFLOW_SPARK_MASTER": master}, "sql", "SELECT ip FROM talkingdata")
    assert proc.returncode == 2
    assert proc.stderr.strip() .splitlines()[-1].startswith(
        f"error: the Spark master {master} is unreachable")
    assert "Traceback" not in proc.stderr
    proc = _cli({"FRAUDFLOW_STORE_URL": settings.store_url,
                 "FRAUDFLOW_OFFLINE_EXECUTOR": "duckdb"}, "sql", "SELECT ip FROM talkingdata")
    assert proc.returncode == 2
    assert "FRAUDFLOW_OFFLINE_EXECUTOR must be one of embedded, spark" in proc.stderr
    with pytest.raises(SparkError, match="unknown Spark master"):
        runtime.check_master("mars://1")


def test_health_and_versions(batch_engine: runtime.BatchEngine) -> None:
    assert batch_engine.health() == (f"Spark: {runtime.PYSPARK_VERSION}, "
                                     f"OpenMLDB: {runtime.OPENMLDB_VERSION}-0c10b16")


def test_cli_fetch_and_health_commands() -> None:
    proc = _cli({}, "spark", "fetch")
    assert proc.returncode == 0, proc.stderr
    assert f"OpenMLDB {runtime.OPENMLDB_VERSION} batch engine in {runtime.cache_dir()}" \
        in proc.stdout
    proc = _cli({"FRAUDFLOW_SPARK_MASTER": "local[1]"}, "spark", "health")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OpenMLDB batch engine on local[1] answers (Spark: 3.2.1, OpenMLDB: 0.9.0" \
        in proc.stdout
