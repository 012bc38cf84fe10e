"""Test helpers of the retraining workflow: a lake as the archive consumer writes it, and
settings rooted in a test's tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.clock import epoch_ms_from_wall
from core.config import SAMPLE_DATA_DIR, Settings
from core.lake import SCHEMA, TEMP_SUFFIX, TopicLake
from features.datagen import generate_clicks, read_clicks
from workflows.config import WorkflowSettings

SAMPLES = SAMPLE_DATA_DIR


def write_lake(clicks: pd.DataFrame, lake_dir: Path, name: str = "part-0",
               topic: str = "clicks") -> list[Path]:
    """Write clicks (datagen's columns, wall-clock click_time) into the lake as the archive
    does (`core.lake`: partitions by UTC+8 wall-clock hour, epoch-ms click_time, the lake's
    marker, each file appearing atomically)."""
    topic_lake = TopicLake(lake_dir, topic)
    clock = topic_lake.claim()
    frame = clicks.assign(click_time=epoch_ms_from_wall(clicks["click_time"]))[SCHEMA.names]
    written = []
    for hour_start, part in frame.groupby(frame["click_time"] - frame["click_time"] % 3_600_000):
        folder = topic_lake.hour_folder(int(hour_start), clock)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.parquet"
        temp = folder / f"{name}.parquet{TEMP_SUFFIX}"
        pq.write_table(pa.Table.from_pandas(part, schema=SCHEMA, preserve_index=False), temp)
        os.replace(temp, path)
        written.append(path)
    return written


def synthetic_clicks(rows: int, seed: int = 0, hours: float = 72) -> pd.DataFrame:
    return generate_clicks(rows, seed=seed, start="2017-11-06 16:00:00", hours=hours)


def sample_clicks(name: str = "train_sample_days.csv") -> pd.DataFrame:
    return read_clicks(SAMPLES / name)


def settings_in(root: Path) -> Settings:
    return Settings(store_url=f"embedded://{root / 'store'}", var_dir=root / "var",
                    lake_dir=root / "lake", model_dir=root / "models")


def workflow_settings(**overrides: object) -> WorkflowSettings:
    values: dict[str, object] = {"training_hours": 96, **overrides}
    return WorkflowSettings(**values)  # type: ignore[arg-type]
