"""The lake end to end: real clicks through a real broker and the archive process, then the
workflow's import and training on a topic that is not `clicks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import features
from core.clock import epoch_ms_from_wall
from core.config import SAMPLE_DATA_DIR, Settings
from core.lake import LEGACY_CLOCK, MARKER, WALL_CLOCK, TopicLake
from features.datagen import read_clicks
from ingest import producer
from tests.fixtures_kafka import KafkaBroker
from tests.workflow_helpers import settings_in
from workflows.cli import workflow
from workflows.lake_import import import_new_files
from workflows.layout import Layout
from workflows.sql import create_table_sql, run_script
from workflows.window import Window

SAMPLE = SAMPLE_DATA_DIR / "train_sample_days.csv"  # 2017-11-06 16:00 … 11-09 15:59 (UTC+8)


def _archive(broker: KafkaBroker, topic: str, settings: Settings, file_format: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
           "FRAUDFLOW_TOPIC": topic, "FRAUDFLOW_LAKE_DIR": str(settings.lake_dir),
           "FRAUDFLOW_VAR_DIR": str(settings.var_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "fraudflow", "archive", "--group", f"archive-{file_format}",
         "--format", file_format, "--flush-seconds", "1", "--until-idle", "1.5",
         "--metrics-port", "0"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _offline_count(settings: Settings) -> int:
    conn = features.connect(settings.store_url, settings.database)
    try:
        cursor = conn.cursor()
        cursor.execute("SET @@execute_mode='offline'")
        return int(cursor.execute(f"SELECT count(*) AS n FROM {settings.table}")
                   .fetchall()[0][0])
    finally:
        conn.close()


@pytest.mark.kafka
@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_archived_real_clicks_import_exactly_the_due_hours(
        kafka_broker: KafkaBroker, topic: str, tmp_path: Path, file_format: str) -> None:
    settings = settings_in(tmp_path).with_overrides(topic=topic)
    stats = producer.produce(producer.file_rows(SAMPLE), kafka_broker.bootstrap_servers, topic,
                             "sample", progress=False)
    assert stats.acknowledged == 10_000
    _archive(kafka_broker, topic, settings, file_format)

    lake = TopicLake(settings.lake_dir, topic)
    assert lake.partition_clock() == WALL_CLOCK
    files = lake.files()
    assert {f.file_format for f in files} == {file_format}
    clicks = read_clicks(SAMPLE)
    # every file's clicks lie in its partition's wall-clock hour
    hours = {f.hour for f in files}
    assert hours == set(clicks["click_time"].dt.floor("h").dt.to_pydatetime())

    run_script(settings, "offline", create_table_sql(settings))
    layout = Layout(settings.var_dir)
    end = datetime(2017, 11, 8, 12)
    result = import_new_files(settings, layout, Window(end, 96))
    due = int((clicks["click_time"] < pd.Timestamp(end)).sum())
    assert 0 < due < len(clicks)
    assert (result.rows, _offline_count(settings)) == (due, due)
    assert result.files + result.not_yet_due == len(files)
    # the next hour brings exactly that hour's clicks
    later = import_new_files(settings, layout, Window(end + timedelta(hours=1), 96))
    in_hour = int(((clicks["click_time"] >= pd.Timestamp(end))
                   & (clicks["click_time"] < pd.Timestamp(end + timedelta(hours=1)))).sum())
    assert later.rows == in_hour and later.already_imported == result.files


@pytest.mark.kafka
def test_training_on_a_topic_that_is_not_clicks(
        kafka_broker: KafkaBroker, topic: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDFLOW_TRAINING_HOURS", "96")
    monkeypatch.setenv("FRAUDFLOW_AUC_FLOOR", "0.6")
    # the sample's 4-day holdout has a handful of installs: a target they can honour
    monkeypatch.setenv("FRAUDFLOW_MAX_INSTALL_LOSS", "0.25")
    settings = settings_in(tmp_path).with_overrides(topic=topic)
    producer.produce(producer.file_rows(SAMPLE), kafka_broker.bootstrap_servers, topic,
                     "sample", progress=False)
    _archive(kafka_broker, topic, settings, "parquet")
    assert not (settings.lake_dir / "clicks").exists()
    result = CliRunner().invoke(workflow, ["run", "--window-end", "2017110916"], obj=settings)
    assert result.exit_code == 0, result.output
    assert "gate chose deploy" in result.output
    assert _offline_count(settings) == 10_000


def test_a_lake_from_before_the_marker_is_read_in_utc(tmp_path: Path) -> None:
    """Lakes written before partitions followed the wall clock named them by the UTC hour."""
    home = tmp_path / "clicks"
    utc_folder = home / "date=2017-11-06" / "hour=08"  # 16:00 in UTC+8
    utc_folder.mkdir(parents=True)
    clicks = read_clicks(SAMPLE)
    hour = clicks[clicks["click_time"].dt.floor("h") == pd.Timestamp("2017-11-06 16:00")]
    hour.assign(click_time=epoch_ms_from_wall(hour["click_time"])).to_parquet(
        utc_folder / "clicks-p0-000000000000-000000000009.parquet", index=False)
    lake = TopicLake(tmp_path, "clicks")
    assert lake.partition_clock() == LEGACY_CLOCK
    assert [f.hour for f in lake.files()] == [datetime(2017, 11, 6, 16)]
    assert lake.claim() == LEGACY_CLOCK  # the archive keeps extending it in UTC
    assert json.loads((home / MARKER).read_text()) == {"partition_clock": LEGACY_CLOCK}
    ms = int(epoch_ms_from_wall(pd.Series([pd.Timestamp("2017-11-06 17:30")]))[0])
    assert lake.hour_folder(ms - ms % 3_600_000, LEGACY_CLOCK) == home / "date=2017-11-06" / \
        "hour=09"
    assert TopicLake(tmp_path / "new", "clicks").claim() == WALL_CLOCK
