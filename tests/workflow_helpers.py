"""Test helpers of the retraining workflow: a lake as the archive consumer writes it, and
settings rooted in a test's tmp dir."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from core.clock import epoch_ms_from_wall
from core.config import SAMPLE_DATA_DIR, Settings, WorkflowSettings
from core.lake import SCHEMA, TopicLake
from features.datagen import generate_clicks, read_clicks

SAMPLES = SAMPLE_DATA_DIR


def write_lake(clicks: pd.DataFrame, lake_dir: Path, name: str = "part-0",
               topic: str = "clicks") -> list[Path]:
    """Write clicks (datagen's columns, wall-clock click_time) into the lake as the archive
    does (`core.lake`: partitions by UTC+8 wall-clock hour, epoch-ms click_time, the lake's
    marker, each file appearing atomically)."""
    frame = clicks.assign(click_time=epoch_ms_from_wall(clicks["click_time"]))[SCHEMA.names]
    return TopicLake(lake_dir, topic).write_hours(
        pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), name)


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
