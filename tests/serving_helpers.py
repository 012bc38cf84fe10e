"""A feature store and models for the predict-server tests (built once per session)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import requests

from core.config import SAMPLE_DATA_DIR
from core.registry import ModelVersion, OperatingPoint, Registry, model_metadata
from features.datagen import read_clicks
from features.store import feature_sql, init_store, insert_clicks
from workflows.training import train_on_click_file

DATABASE, TABLE, DEPLOYMENT = "demo_db", "talkingdata", "demo"

SAMPLE = SAMPLE_DATA_DIR / "train_sample.csv"
SEED_EVENT = {"ip": 114904, "app": 11, "device": 1, "os": 15, "channel": 319,
              "click_time": 1509960088000, "is_attributed": 0}
ADMIN_TOKEN = "test-admin-token"


@dataclass(frozen=True)
class ServingData:
    """An embedded store with the sample's clicks online and two models trained on them."""

    store_url: str
    model_a: str  # LightGBM text
    model_b: str  # more rounds: different scores


def build_serving_data(root: Path) -> ServingData:
    store_url = f"embedded://{root / 'store'}"
    init_store(store_url, DATABASE, TABLE, DEPLOYMENT)
    insert_clicks(store_url, DATABASE, TABLE, read_clicks(SAMPLE))
    model_a, _ = train_on_click_file(store_url, SAMPLE, DATABASE, TABLE, DEPLOYMENT, rounds=5)
    model_b, _ = train_on_click_file(store_url, SAMPLE, DATABASE, TABLE, DEPLOYMENT, rounds=20)
    return ServingData(store_url, model_a, model_b)


def save_model(registry: Registry, model_text: str,
               score_cdf: dict[str, float] | None = None,
               operating_point: OperatingPoint | None = None) -> ModelVersion:
    """Store a model with the metadata training writes (not promoted); without `score_cdf`
    (the holdout's scores) or `operating_point`, as a model trained before training stored
    them."""
    metadata = model_metadata(lgb.Booster(model_str=model_text).feature_name(),
                              feature_sql(TABLE), database=DATABASE, deployment=DEPLOYMENT,
                              table=TABLE, score_cdf=score_cdf, operating_point=operating_point)
    return registry.save(model_text, metadata)


def registry_serving(root: Path, model_text: str) -> tuple[Registry, ModelVersion]:
    """A fresh registry whose production model is `model_text`."""
    registry = Registry(root)
    version = save_model(registry, model_text)
    registry.promote(version.version)
    return registry, version


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.2) -> None:
    """Until `condition()` is true (a server still booting may refuse connections)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:  # still booting
            pass
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")
