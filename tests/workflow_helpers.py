"""Test helpers of the retraining workflow: a lake as the archive consumer writes it, and
settings rooted in a test's tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.config import Settings
from features.datagen import generate_clicks, read_clicks
from workflows.config import WorkflowSettings

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "talkingdata"
_UTC8_MS = 8 * 3_600_000
LAKE_SCHEMA = pa.schema([("ip", pa.int32()), ("app", pa.int32()), ("device", pa.int32()),
                         ("os", pa.int32()), ("channel", pa.int32()),
                         ("click_time", pa.int64()), ("is_attributed", pa.int32())])


def write_lake(clicks: pd.DataFrame, lake_dir: Path, name: str = "part-0") -> list[Path]:
    """Write clicks (datagen's columns, wall-clock click_time) as the archive does:
    clicks/date=YYYY-MM-DD/hour=HH/<name>.parquet with epoch-ms click_time (read as UTC+8),
    each file appearing atomically."""
    wall = clicks["click_time"]
    epoch_ms = (wall - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1) - _UTC8_MS
    frame = clicks.assign(click_time=epoch_ms.astype("int64"))[LAKE_SCHEMA.names]
    written = []
    for (date, hour), part in frame.groupby([wall.dt.strftime("%Y-%m-%d"), wall.dt.hour]):
        folder = lake_dir / "clicks" / f"date={date}" / f"hour={hour:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.parquet"
        temp = folder / f".{name}.parquet.tmp"
        pq.write_table(pa.Table.from_pandas(part, schema=LAKE_SCHEMA, preserve_index=False),
                       temp)
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
