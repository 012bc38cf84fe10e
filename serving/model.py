"""The model the server scores with: read from the registry, checked, swapped atomically.

The registry's production pointer is the one source of truth for every worker. An admin call
(`/update`, `/models/rollback`) checks the model, promotes it in the registry and swaps it in
its own worker; the other workers see the pointer move within `MODEL_POLL_INTERVAL` seconds
and swap too, as they do when the training workflow promotes a model.

Requests read `ModelHolder.current` once and use that object to the end, so a swap never mixes
two models in one request; a swap is one reference assignment (atomic in CPython), so requests
never wait on a lock. Loads and swaps are serialized by a lock among themselves. The threshold
a model decides at is resolved when it is loaded and travels in the same object, so a swap
switches model and threshold together.

The threshold, by precedence: FRAUDFLOW_PREDICT_THRESHOLD when set (an operator's override,
for every model); else the model's own operating point, chosen in training on its holdout;
else, for a model without one (trained before training chose one, or a file given to
/update), DEFAULT_THRESHOLD.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
from flask import Flask, current_app
from lightgbm.basic import _LIB, _safe_call

from core.exceptions import RegistryError
from core.registry import LABEL, ModelVersion, OperatingPoint, Registry, operating_point_of
from serving.exceptions import (
    FeatureStoreRefused,
    FeatureStoreUnavailable,
    ModelMismatch,
    ModelRejected,
    NoModelToServe,
)
from serving.features import FeatureRows, FeatureStore, probe_event
from serving.metrics import (
    MODEL_INFO,
    MODEL_LOAD_FAILURES,
    MODEL_TRAINED_TIMESTAMP,
    export_baseline_score_cdf,
    export_decision_baseline,
)

log = logging.getLogger(__name__)

# LightGBM C API constants (c_api.h: C_API_PREDICT_NORMAL, C_API_DTYPE_FLOAT64).
_PREDICT_NORMAL = 0
_DTYPE_FLOAT64 = 1

#: The threshold of models without an operating point: the rule every model decided by before
#: training chose one, kept so that such a model decides as it always did. With installs at
#: ~0.25 % of clicks it calls nearly every click fraud; retrain to get a threshold that means
#: something.
DEFAULT_THRESHOLD = 0.5
#: Where the threshold a model decides at came from (`threshold_source` in replies).
FROM_OVERRIDE, FROM_MODEL, FROM_DEFAULT = "override", "model", "default"


class SingleRowPredictor:
    """LightGBM's fast single-row scoring (C API `LGBM_BoosterPredictForMatSingleRowFast`),
    set up once per model. `Booster.predict` sets up a predictor on every call, which costs
    ~0.2 ms: more than fetching the features, and the most of a one-event request. Calls are
    thread-safe (LightGBM locks the booster's single-row predictor). It reaches the C API
    through the lightgbm package's library handle (`_LIB`, `Booster._handle`);
    tests/test_serving_api.py checks its scores against `Booster.predict`."""

    def __init__(self, booster: lgb.Booster) -> None:
        outputs = booster.num_model_per_iteration()
        if outputs != 1:  # the C call would write that many scores into one double
            raise ModelRejected(f"the model gives {outputs} scores per event, not one "
                                f"probability (train a binary classifier)")
        self._booster = booster  # the C handle below lives only as long as the booster
        self._config = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(_PREDICT_NORMAL), ctypes.c_int(0), ctypes.c_int(-1),
            ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(booster.num_feature()),
            ctypes.c_char_p(b"num_threads=1"), ctypes.byref(self._config)))
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._config)
        # Our own handle on the C function (lightgbm's is left alone): through PyDLL, so the
        # call keeps the GIL, as one row takes microseconds and handing the GIL to the
        # worker's event-loop thread and back cost more; with its argument types declared,
        # so ctypes converts them itself, cheaper than making pointer objects per call.
        self._predict = ctypes.PyDLL(_LIB._name)["LGBM_BoosterPredictForMatSingleRowFast"]
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_double)]
        self._predict.restype = ctypes.c_int
        self._features = booster.num_feature()

    def __call__(self, values: Sequence[float | None]) -> float:
        """The score of one row: every feature's value in the model's order (None: missing,
        which LightGBM reads as NaN, as it does in a batch)."""
        if len(values) != self._features:  # the C call reads that many doubles
            raise ModelMismatch(f"a row of {len(values)} values for a model of "
                                f"{self._features} features")
        # the row as the C call reads it: an array of doubles, made straight from the values
        row = array("d", cast(Sequence[float], values) if None not in values else
                    [math.nan if value is None else value for value in values])
        score, length = ctypes.c_double(), ctypes.c_int64()
        _safe_call(self._predict(self._config, row.buffer_info()[0], length, score))
        return score.value


@dataclass(frozen=True)
class LoadedModel:
    version: str
    booster: lgb.Booster
    feature_names: tuple[str, ...]
    database: str
    deployment: str
    trained_at: datetime
    source: str  # where it was loaded from, for people
    # Its holdout's score CDF by histogram bound (empty for models trained without one)
    score_cdf: dict[str, float] = field(default_factory=dict, compare=False)
    # Its operating point from training (None for models trained without one), and the
    # threshold it decides at, with where that came from (see the module's docstring)
    operating_point: OperatingPoint | None = None
    threshold: float = DEFAULT_THRESHOLD
    threshold_source: str = FROM_DEFAULT
    score_one: SingleRowPredictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_one", SingleRowPredictor(self.booster))

    def inputs(self, features: FeatureRows) -> list[tuple[Any, ...]]:
        """The deployment's rows as the model's input rows: its features in its order."""
        pick = feature_picker(features.names, self.feature_names)
        return [pick(row) for row in features.rows]

    def predict(self, rows: Sequence[Sequence[float | None]]) -> list[float]:
        """The scores of input rows (None: a missing value)."""
        if len(rows) == 1:
            return [self.score_one(rows[0])]
        # One thread: OpenMP's start-up costs more than it saves on a batch of at most a
        # thousand rows, and the gunicorn workers already keep every core busy.
        scores = self.booster.predict(np.array(rows, dtype=np.float64), num_threads=1)
        return np.asarray(scores, dtype=np.float64).tolist()

    @property
    def expected_blocked_share(self) -> float | None:
        """The share of clicks the model blocked on its holdout at the threshold it decides
        at; None unless it decides at its own operating point."""
        if self.threshold_source != FROM_MODEL or self.operating_point is None:
            return None
        return self.operating_point.blocked_share

    def describe(self) -> dict[str, Any]:
        point = self.operating_point
        return {"version": self.version, "trained_at": self.trained_at.isoformat(),
                "database": self.database, "deployment": self.deployment,
                "feature_names": list(self.feature_names), "source": self.source,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "operating_point": point.to_dict() if point is not None else None}


@lru_cache(maxsize=64)
def feature_positions(output: tuple[str, ...], wanted: tuple[str, ...]) -> tuple[int, ...]:
    """Where each wanted feature is in the deployment's output (cached: both rarely change)."""
    missing = [name for name in wanted if name not in output]
    if missing:
        raise ModelMismatch(
            f"the deployment no longer outputs the model's feature(s) {', '.join(missing)}")
    return tuple(output.index(name) for name in wanted)


@lru_cache(maxsize=64)
def feature_picker(output: tuple[str, ...],
                   wanted: tuple[str, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Picks the wanted features, in their order, out of a row of the deployment's output."""
    positions = feature_positions(output, wanted)
    if len(positions) == 1:  # itemgetter of one position gives the value, not a tuple
        (position,) = positions
        return lambda row: (row[position],)
    return itemgetter(*positions)


def threshold_for(point: OperatingPoint | None,
                  override: float | None) -> tuple[float, str]:
    """The threshold a model decides at and where it comes from, by the documented
    precedence: the override, the model's operating point, the default."""
    if override is not None:
        return override, FROM_OVERRIDE
    if point is not None and point.threshold is not None:
        return point.threshold, FROM_MODEL
    return DEFAULT_THRESHOLD, FROM_DEFAULT


def parse_model(text: str, metadata: dict[str, Any], version: str, source: str,
                database: str, deployment: str,
                threshold_override: float | None = None) -> LoadedModel:
    """A LightGBM text model with its registry metadata, deciding at the threshold
    `threshold_for` resolves; ModelRejected says what is wrong."""
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ModelRejected(f"not a LightGBM text model: {exc}") from None
    names = tuple(booster.feature_name())
    declared = metadata.get("feature_names")
    if declared is not None and tuple(declared) != names:
        raise ModelRejected(f"metadata feature_names {declared} differ from the model's {names}")
    if booster.pandas_categorical:
        # Pandas category codes are not the raw ids the deployment returns.
        raise ModelRejected("the model was trained on pandas category columns; train it on "
                            "the integer ids with categorical_feature=[...] instead")
    trained = metadata.get("trained_at") or metadata.get("created_at")
    try:
        trained_at = datetime.fromisoformat(trained) if trained else datetime.now(UTC)
    except (TypeError, ValueError):
        raise ModelRejected(f"metadata trained_at/created_at {trained!r} is not an ISO "
                            f"time") from None
    try:
        point = operating_point_of(metadata)
    except RegistryError as exc:  # deciding at a wrong threshold is worse than not swapping
        raise ModelRejected(str(exc)) from None
    if point is not None and point.threshold is None:
        log.warning("model %s has no operating point (%s): it decides at the %s threshold",
                    version, point.refusal, "override" if threshold_override is not None
                    else f"default {DEFAULT_THRESHOLD}")
    threshold, threshold_source = threshold_for(point, threshold_override)
    return LoadedModel(
        version=version, booster=booster, feature_names=names,
        database=metadata.get("database") or database,
        deployment=metadata.get("deployment") or deployment,
        trained_at=trained_at, source=source, score_cdf=_score_cdf(metadata, version),
        operating_point=point, threshold=threshold, threshold_source=threshold_source)


def _score_cdf(metadata: dict[str, Any], version: str) -> dict[str, float]:
    """The metadata's score CDF, or none: a bad monitoring baseline is no reason to refuse a
    model that scores fine, so it is logged and left out rather than rejected."""
    cdf = metadata.get("score_cdf") or {}
    if isinstance(cdf, dict) and all(isinstance(fraction, int | float) and 0 <= fraction <= 1
                                     for fraction in cdf.values()):
        return {str(le): float(fraction) for le, fraction in cdf.items()}
    log.warning("model %s: metadata score_cdf is not fractions by bound; no score baseline "
                "is exported for it", version)
    return {}


def check_against_deployment(model: LoadedModel, store: FeatureStore) -> None:
    """The model's features are exactly the deployment's output minus the label, and it
    scores a probe event with a probability. FeatureStoreUnavailable/Refused if the check
    cannot run."""
    features = store.fetch(model.database, model.deployment, [probe_event()])
    served = {name for name in features.names if name != LABEL}
    wanted = set(model.feature_names)
    if served != wanted:
        missing, extra = sorted(wanted - served), sorted(served - wanted)
        raise ModelRejected(
            f"the model's features do not match the output of deployment "
            f"{model.database}.{model.deployment}: the deployment lacks {missing or 'none'}, "
            f"the model lacks {extra or 'none'}")
    try:
        scores = model.predict(model.inputs(features))
    except lgb.basic.LightGBMError as exc:
        raise ModelRejected(f"the model fails on a probe event: {exc}") from None
    if len(scores) != 1 or not (math.isfinite(scores[0]) and 0 <= scores[0] <= 1):
        raise ModelRejected(f"the model's output on a probe event is {scores}, "
                            f"not one probability (train a binary classifier)")


class ModelHolder:
    def __init__(self, registry: Registry, store: FeatureStore, database: str,
                 deployment: str, threshold_override: float | None = None) -> None:
        self.registry = registry
        self.store = store
        self.database = database  # for models whose metadata names no deployment
        self.deployment = deployment
        self.threshold_override = threshold_override  # FRAUDFLOW_PREDICT_THRESHOLD, if set
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self._rejected_version: str | None = None  # not retried until the pointer moves
        self._last_warning = ""

    def reload(self) -> LoadedModel:
        """Serve the registry's production model, loading it unless already served."""
        with self._swap_lock, _counting_rejections():
            production = self.registry.production()
            if production is None:
                raise NoModelToServe(f"the registry {self.registry.root} has no production "
                                     f"model yet")
            return self._serve(production)

    def follow_registry(self) -> None:
        """Catch up with the production pointer. A rejected version is logged once and not
        retried until the pointer moves; meanwhile the old model serves on."""
        try:
            with self._swap_lock, _counting_rejections():
                production = self.registry.production()
                if production is not None and production.version != self._rejected_version:
                    self._serve(production)
        except ModelRejected as exc:
            log.error("not serving the production model: %s", exc)
        except (FeatureStoreUnavailable, FeatureStoreRefused, RegistryError) as exc:
            if str(exc) != self._last_warning:  # retried every poll: say it once
                log.warning("cannot load the production model yet: %s", exc)
                self._last_warning = str(exc)

    def update(self, model_path: Path, database: str | None,
               deployment: str | None) -> LoadedModel:
        """Check the model file, put it in production in the registry, and serve it. A file
        of a registry version is promoted as it is; any other file becomes a new version."""
        with self._swap_lock, _counting_rejections():
            version = self._registry_version_at(model_path)
            if version is not None:
                model = self._load(version)
                if (database or model.database, deployment or model.deployment) != \
                        (model.database, model.deployment):
                    raise ModelRejected(
                        f"registry version {model.version} is for {model.database}."
                        f"{model.deployment}; omit database and deployment to promote it")
            else:
                model = self._import(model_path, database or self.database,
                                     deployment or self.deployment)
            self.registry.promote(model.version)
            self._install(model)
            return model

    def rollback(self) -> LoadedModel:
        """Put back in production the model promoted before the current production one."""
        with self._swap_lock, _counting_rejections():
            production = self.registry.production()
            earlier = [entry["version"] for entry in self.registry.history()
                       if production is None or entry["version"] != production.version]
            if not earlier:
                raise NoModelToServe("no earlier production model to roll back to")
            model = self._load(self.registry.get(earlier[-1]))
            self.registry.promote(model.version)
            self._install(model)
            return model

    # --- with the swap lock held ----------------------------------------------------------

    def _serve(self, production: ModelVersion) -> LoadedModel:
        if self.current is not None and self.current.version == production.version:
            return self.current
        try:
            model = self._load(production)
        except ModelRejected:
            self._rejected_version = production.version
            raise
        self._install(model)
        return model

    def _load(self, version: ModelVersion) -> LoadedModel:
        if self.previous is not None and self.previous.version == version.version:
            model = self.previous  # a rollback: no need to parse it again
        else:
            try:
                text = version.model_file.read_text()
                metadata = version.metadata
            except (OSError, RegistryError) as exc:
                raise ModelRejected(f"model {version.version}: {exc}") from None
            if not isinstance(metadata, dict):
                raise ModelRejected(f"model {version.version}: metadata.json is not an object")
            model = parse_model(text, metadata, version.version, str(version.path),
                                self.database, self.deployment, self.threshold_override)
        check_against_deployment(model, self.store)
        return model

    def _import(self, path: Path, database: str, deployment: str) -> LoadedModel:
        """A model file from outside the registry, checked, then saved as a new version."""
        try:
            text = path.read_text()
            trained_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelRejected(f"cannot read {path}: {exc}") from None
        metadata = {"database": database, "deployment": deployment,
                    "trained_at": trained_at.isoformat(), "source": str(path)}
        model = parse_model(text, metadata, "candidate", str(path), database, deployment,
                            self.threshold_override)
        check_against_deployment(model, self.store)
        version = self.registry.save(
            text, {**metadata, "feature_names": list(model.feature_names)})
        return replace(model, version=version.version, source=str(version.path))

    def _install(self, model: LoadedModel) -> None:
        old = self.current
        if old is not None and old.version == model.version:
            return  # already served (e.g. /update of the production version)
        if old is not None:
            MODEL_INFO.labels(old.version, old.trained_at.isoformat()).set(0)
        MODEL_INFO.labels(model.version, model.trained_at.isoformat()).set(1)
        MODEL_TRAINED_TIMESTAMP.set(model.trained_at.timestamp())
        export_baseline_score_cdf(model.score_cdf, old.score_cdf if old is not None else {})
        export_decision_baseline(model.version, model.threshold, model.expected_blocked_share)
        self.previous = old
        self.current = model
        self._rejected_version = None
        log.info("serving model %s (previously %s)", model.version, old and old.version)

    def _registry_version_at(self, path: Path) -> ModelVersion | None:
        directory = path.resolve()
        if directory.name == "model.txt":
            directory = directory.parent
        for version in self.registry.versions():
            if version.path.resolve() == directory:
                return version
        return None


@contextmanager
def _counting_rejections() -> Iterator[None]:
    try:
        yield
    except ModelRejected:
        MODEL_LOAD_FAILURES.inc()
        raise


def _follow_registry_forever(holder: ModelHolder, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            holder.follow_registry()
        except Exception:  # a bug: log it, and keep following (the thread must not die)
            log.exception("following the model registry failed")


def init_app(app: Flask) -> None:
    """Serve the production model if there is one, and follow the registry from then on
    (call after features.init_app)."""
    holder = ModelHolder(Registry(Path(app.config["MODEL_DIR"])),
                         app.extensions["fraudflow.features"],
                         app.config["DATABASE"], app.config["DEPLOYMENT"],
                         app.config["THRESHOLD"])
    app.extensions["fraudflow.model"] = holder
    holder.follow_registry()
    interval = float(app.config["MODEL_POLL_INTERVAL"])
    if interval > 0:
        threading.Thread(target=_follow_registry_forever, args=(holder, interval),
                         name="follow-model-registry", daemon=True).start()


def model_holder() -> ModelHolder:
    holder: ModelHolder = current_app.extensions["fraudflow.model"]
    return holder
