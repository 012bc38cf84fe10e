"""Step `train`: LightGBM on the extracted features of the window, split by time.

The newest `holdout_fraction` of the window's clicks is held out (never seen in training) and
kept as the window's holdout, on which the gate later scores candidate and production alike.
The candidate's operating point (the threshold the predict server decides at) is chosen on the
holdout for the install-loss target and stored in its metadata.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.clock import wall_clock
from core.config import Settings
from core.exceptions import RegistryError
from core.registry import (
    CATEGORICAL_FEATURES,
    LABEL,
    ModelVersion,
    OperatingPoint,
    Registry,
    holdout_score_cdf,
    model_metadata,
)
from features.connection import connect
from features.store import feature_sql
from workflows.evaluation import Metrics, choose_operating_point, evaluate
from workflows.exceptions import StepError
from workflows.layout import Layout, read_json, write_json
from workflows.plots import write_report
from workflows.sql import deployment_name
from workflows.window import Window

log = logging.getLogger(__name__)

TIME_COLUMN = "click_time"
ROUNDS = 200
# Shallow trees with smoothed categories: with a few hundred attributed clicks among
# thousands of app/os/channel ids, deeper trees learn single ids by heart (the seed's
# num_leaves=7, max_depth=3 and min_child_samples=100, plus category smoothing).
PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "max_depth": 3,
    "min_data_in_leaf": 100,
    "cat_smooth": 50,
    "min_data_per_group": 50,
    "feature_fraction": 0.9,
    "seed": 0,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
ROWS_PER_THREAD = 1_000_000  # below this, OpenMP threads cost more than they save


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    feature_names: list[str]


def read_window(folder: Path, window: Window) -> pd.DataFrame:
    """The extracted features of the window's clicks (only those are read), click_time as
    epoch milliseconds."""
    parts = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
    if not parts:
        raise StepError(f"no extracted features in {folder}: run the extract step first")
    dataset = ds.dataset(parts, format="parquet")
    start: object = window.start_ms
    end: object = window.end_ms
    if pa.types.is_timestamp(dataset.schema.field(TIME_COLUMN).type):  # a cluster's OUTFILE
        start, end = (pd.Timestamp(ms, unit="ms", tz="UTC") for ms in (window.start_ms,
                                                                       window.end_ms))
    in_window = (pc.field(TIME_COLUMN) >= start) & (pc.field(TIME_COLUMN) < end)
    frame = dataset.to_table(filter=in_window).to_pandas()
    if pd.api.types.is_datetime64_any_dtype(frame[TIME_COLUMN]):
        frame[TIME_COLUMN] = frame[TIME_COLUMN].astype("datetime64[ms, UTC]").astype("int64")
    if frame.empty:
        raise StepError(f"0 clicks in the window {_span(window.start_ms, window.end_ms)}; "
                        f"{_data_range(dataset)}")
    return frame


def _data_range(dataset: ds.Dataset) -> str:
    """Where the data is, and how to point a run at it."""
    times = dataset.to_table(columns=[TIME_COLUMN]).column(TIME_COLUMN)
    if len(times) == 0:
        return "the offline table holds no clicks at all: archive and import some first"
    if pa.types.is_timestamp(times.type):  # a cluster's OUTFILE
        times = times.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    bounds = pc.min_max(times)
    first, last = int(bounds["min"].as_py()), int(bounds["max"].as_py())
    suggestion = Window.ending(wall_clock(last + 3_600_000).isoformat(sep=" "), 1).id
    return (f"the offline table holds clicks from {_span(first, last + 1)}: choose the window "
            f"with --window-end (e.g. --window-end {suggestion}) and FRAUDFLOW_TRAINING_HOURS")


def _span(start_ms: int, end_ms: int) -> str:
    return (f"{wall_clock(start_ms):%Y-%m-%d %H:%M:%S} to {wall_clock(end_ms):%Y-%m-%d %H:%M:%S}"
            " (UTC+8)")


def split_by_time(frame: pd.DataFrame, window: Window, holdout_fraction: float) -> Split:
    """The clicks in time order; the newest are the holdout.

    Equal timestamps are ordered by the other columns: INTO OUTFILE keeps no row order
    (Spark's files come in any order), and the same data must train the same model.
    """
    names = [c for c in frame.columns if c not in (TIME_COLUMN, LABEL)]
    ordered = frame.sort_values([TIME_COLUMN, *names, LABEL]).reset_index(drop=True)
    cut = round(len(ordered) * (1 - holdout_fraction))
    if cut == 0 or cut == len(ordered):
        raise StepError(f"{len(ordered)} clicks in the window {window.describe()}: too few to "
                        "hold out the newest for validation")
    return Split(ordered.iloc[:cut], ordered.iloc[cut:], names)


def fit(train: pd.DataFrame, feature_names: list[str]) -> lgb.Booster:
    positives = int(train[LABEL].sum())
    if positives == 0:
        raise StepError(f"no attributed clicks among the {len(train)} training rows")
    # Up-weight the rare attributed clicks by the square root of the imbalance: the full
    # ratio (~400) makes each positive's ids dominate the splits and costs holdout AUC.
    threads = min(os.cpu_count() or 1, 1 + len(train) // ROWS_PER_THREAD)
    params = {**PARAMS, "num_threads": threads,
              "scale_pos_weight": math.sqrt((len(train) - positives) / positives)}
    dataset = lgb.Dataset(train[feature_names], label=train[LABEL],
                          categorical_feature=list(CATEGORICAL_FEATURES), free_raw_data=True)
    return lgb.train(params, dataset, num_boost_round=ROUNDS)


def predict(model: lgb.Booster, frame: pd.DataFrame,
            feature_names: list[str]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict(frame[feature_names]), dtype=np.float64)


def load_model(version: ModelVersion) -> lgb.Booster:
    return lgb.Booster(model_file=str(version.model_file))


def save_candidate(model: lgb.Booster, split: Split, settings: Settings, layout: Layout,
                   window: Window,
                   max_install_loss: float) -> tuple[ModelVersion, Metrics, OperatingPoint]:
    """Score the holdout, choose the operating point, draw the report, store the version in
    the registry and record it as this window's candidate (with the holdout the gate will
    score it on). Too few installs for the target: the operating point is a refusal (stored,
    and the gate rejects the candidate for it)."""
    scores = predict(model, split.holdout, split.feature_names)
    metrics = evaluate(split.holdout[LABEL], scores)
    point = choose_operating_point(split.holdout[LABEL], scores, max_install_loss)
    if point.threshold is None:
        log.warning("candidate without an operating point: %s", point.refusal)
    importance = dict(zip(split.feature_names,
                          model.feature_importance("gain").astype(float).tolist(), strict=True))
    metadata = model_metadata(
        split.feature_names, feature_sql(settings.table), database=settings.database,
        deployment=deployment_name(settings), table=settings.table,
        data_window={**window.describe(),
                     "holdout_from_ms": int(split.holdout[TIME_COLUMN].iloc[0])},
        operating_point=point,
        metrics=metrics.to_dict(),
        score_cdf=holdout_score_cdf(scores),
        training={"rows": len(split.train), "positives": int(split.train[LABEL].sum()),
                  "params": model.params},
        feature_importance_gain=importance)
    registry = Registry(settings.model_dir)
    text = model.model_to_string()
    version = _identical_version(registry, text, metadata["operating_point"], layout, window)
    if version is None:
        with tempfile.TemporaryDirectory() as report:
            write_report(Path(report), split.holdout[LABEL], {"candidate": scores}, importance,
                         {"candidate": point} if point.threshold is not None else {})
            version = registry.save(text, metadata, Path(report))
    layout.work(window.id).mkdir(parents=True, exist_ok=True)
    split.holdout.to_parquet(layout.holdout(window.id), index=False)
    write_json(layout.candidate(window.id), {"version": version.version, "window": window.id,
                                             "metrics": metrics.to_dict(),
                                             "operating_point": point.to_dict()})
    return version, metrics, point


def _identical_version(registry: Registry, text: str, operating_point: dict[str, Any],
                       layout: Layout, window: Window) -> ModelVersion | None:
    """The window's earlier candidate or the production model if it is this very model at the
    same operating point: a re-run on the same data trains the same model, which needs no new
    version (nor a new promotion), unless the install-loss target changed."""
    known = [registry.production()]
    if layout.candidate(window.id).exists():
        with contextlib.suppress(RegistryError):
            known.append(registry.get(read_json(layout.candidate(window.id), "train")["version"]))
    return next((v for v in known if v is not None and v.model_file.read_text() == text
                 and v.metadata.get("operating_point") == operating_point), None)


def train(settings: Settings, layout: Layout, window: Window, holdout_fraction: float,
          max_install_loss: float) -> tuple[ModelVersion, Metrics, OperatingPoint]:
    split = split_by_time(read_window(layout.features(window.id), window), window,
                          holdout_fraction)
    log.info("training on %d rows, holding out %d", len(split.train), len(split.holdout))
    return save_candidate(fit(split.train, split.feature_names), split, settings, layout,
                          window, max_install_loss)


def train_on_click_file(store_url: str, clicks_file: Path, database: str, table: str,
                        deployment: str, rounds: int = 10) -> tuple[str, dict[str, Any]]:
    """A small model (LightGBM text, and its metadata) on the deployment SQL's offline features
    of one click file, loaded into the offline table first. For smoke runs, tests and
    benchmarks: the workflow's `train` step makes the models that go to production."""
    conn = connect(store_url, database)
    try:
        cursor = conn.cursor()
        cursor.execute("SET @@execute_mode='offline'")
        cursor.execute(f"LOAD DATA INFILE '{clicks_file}' INTO TABLE {table} OPTIONS("
                       f"format='{clicks_file.suffix.lstrip('.')}', header=true, "
                       f"mode='overwrite')")
        sql = feature_sql(table)
        frame = pd.DataFrame(cursor.execute(sql).fetchall(),
                             columns=[column[0] for column in cursor.description])
    finally:
        conn.close()
    names = [name for name in frame.columns if name != LABEL]
    dataset = lgb.Dataset(frame[names].astype(np.float64), frame[LABEL], feature_name=names,
                          categorical_feature=[c for c in CATEGORICAL_FEATURES if c in names])
    params = {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "seed": 0,
              "num_threads": 1, "verbose": -1, "deterministic": True}
    text = lgb.train(params, dataset, num_boost_round=rounds).model_to_string()
    return text, model_metadata(names, sql, database=database, deployment=deployment,
                                table=table)
