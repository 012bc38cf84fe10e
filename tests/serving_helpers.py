"""A feature store and models for the predict-server tests (built once per session)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from features.datagen import read_clicks
from features.store import init_store
from serving.bench import (
    DATABASE,
    DEPLOYMENT,
    TABLE,
    save_model,
    store_clicks_online,
    train_small_model,
)
from serving.registry import ModelVersion, Registry

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "talkingdata" / \
    "train_sample.csv"
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
    store_clicks_online(store_url, read_clicks(SAMPLE))
    return ServingData(store_url, train_small_model(store_url, SAMPLE, rounds=5),
                       train_small_model(store_url, SAMPLE, rounds=20))


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
