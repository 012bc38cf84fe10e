"""The predict server's HTTP contract, through Flask's test client."""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import features
from core.config import ConfigError, Settings
from core.registry import ModelVersion, OperatingPoint, Registry, model_metadata
from features.connection import EmbeddedCursor
from features.store import feature_sql, init_store
from serving import create_app
from serving.metrics import _remembered_pid
from serving.model import LoadedModel, ModelHolder
from tests.serving_helpers import (
    ADMIN_TOKEN,
    SEED_EVENT,
    ServingData,
    registry_serving,
    save_model,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEATURES = ["app", "device", "os", "channel", "hour", "day", "qty", "ip_app_count",
            "ip_app_os_count"]


def _holder(app: Flask) -> ModelHolder:
    holder: ModelHolder = app.extensions["fraudflow.model"]
    return holder


def _served_version(client: FlaskClient) -> str:
    response = client.post("/predict", json=SEED_EVENT)
    assert response.status_code == 200, response.json
    return str(response.json["model_version"])  # type: ignore[index]


def _metric(client: FlaskClient, sample: str) -> float:
    """The value of one sample line of /metrics, e.g. 'fraudflow_model_load_failures_total'."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _error(response: TestResponse, status: int, field: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json
    assert isinstance(body, dict)
    assert body.get("field") == field, body
    return str(body["error"])


# --- /predict -------------------------------------------------------------------------------

def test_scores_the_seed_event(client: FlaskClient, model_registry: Registry) -> None:
    response = client.post("/predict", json=SEED_EVENT)
    assert response.status_code == 200
    body = response.json
    assert isinstance(body, dict)
    assert list(body) == ["model_version", "score", "decision", "threshold", "threshold_source"]
    assert 0.0 <= body["score"] <= 1.0
    # model A has no operating point (trained before training chose one): the default
    assert (body["threshold"], body["threshold_source"]) == (0.5, "default")
    assert body["decision"] == ("fraud" if body["score"] < 0.5 else "ok")
    production = model_registry.production()
    assert production is not None and body["model_version"] == production.version


def test_explain_gives_the_deployment_features(client: FlaskClient) -> None:
    body = client.post("/predict?explain=1", json=SEED_EVENT).json
    assert isinstance(body, dict)
    features = body["features"]
    assert list(features) == FEATURES
    # 1509960088000 is 2017-11-06 17:21:28 in UTC+8, the time zone OpenMLDB reads
    assert {k: features[k] for k in ("app", "device", "os", "channel", "hour", "day")} == \
        {"app": 11, "device": 1, "os": 15, "channel": 319, "hour": 17, "day": 6}
    assert features["qty"] >= 1  # the request row counts in its own window


def test_label_is_optional_and_not_an_input(client: FlaskClient) -> None:
    unlabeled = {k: v for k, v in SEED_EVENT.items() if k != "is_attributed"}
    scores = {client.post("/predict", json=event).json["score"]  # type: ignore[index]
              for event in (unlabeled, {**SEED_EVENT, "is_attributed": 1})}
    assert len(scores) == 1


@pytest.mark.parametrize("click_time", [
    "2017-11-06 17:21:28",  # naive: wall clock in UTC+8, as OpenMLDB reads strings
    "2017-11-06T17:21:28+08:00",
    "2017-11-06T09:21:28Z",
    "2017-11-06T09:21:28.000+00:00",
])
def test_iso_click_times_are_the_same_instant(client: FlaskClient, click_time: str) -> None:
    expected = client.post("/predict?explain=1", json=SEED_EVENT).json
    given = client.post("/predict?explain=1", json={**SEED_EVENT, "click_time": click_time})
    assert given.status_code == 200
    assert given.json == expected


def test_batch_scores_in_order_like_single_events(client: FlaskClient) -> None:
    events = [SEED_EVENT, {**SEED_EVENT, "ip": 5348, "app": 3},
              {**SEED_EVENT, "app": 12, "channel": 245}]
    response = client.post("/predict?explain=1", json=events)
    assert response.status_code == 200
    body = response.json
    assert isinstance(body, dict)
    singles = [client.post("/predict?explain=1", json=event).json for event in events]
    assert body["predictions"] == [
        {k: v for k, v in single.items()  # type: ignore[union-attr]
         if k not in ("model_version", "threshold", "threshold_source")}
        for single in singles]
    for key in ("model_version", "threshold", "threshold_source"):
        assert body[key] == singles[0][key]  # type: ignore[index]


def test_batch_limits(client: FlaskClient) -> None:
    assert "at most 1000" in _error(client.post("/predict", json=[SEED_EVENT] * 1001), 413)
    _error(client.post("/predict", json=[]), 400)
    assert client.post("/predict", json=[SEED_EVENT] * 1000).status_code == 200


@pytest.mark.parametrize("change, field", [
    ({"ip": None}, "ip"),
    ({"foo": 1}, "foo"),
    ({"ip": -1}, "ip"),
    ({"app": 2**31}, "app"),
    ({"device": "1"}, "device"),
    ({"os": 15.0}, "os"),
    ({"channel": True}, "channel"),
    ({"click_time": 1509960088}, "click_time"),  # seconds, not milliseconds
    ({"click_time": 1509960088000000}, "click_time"),  # microseconds
    ({"click_time": "2150-01-01 00:00:00"}, "click_time"),
    ({"click_time": "yesterday"}, "click_time"),
    ({"click_time": 1.5e12}, "click_time"),
    ({"click_time": None}, "click_time"),
    ({"is_attributed": 2}, "is_attributed"),
    ({"is_attributed": False}, "is_attributed"),
])
def test_bad_fields_are_named(client: FlaskClient, change: dict[str, Any], field: str) -> None:
    event = {k: v for k, v in {**SEED_EVENT, **change}.items() if v is not None}
    message = _error(client.post("/predict", json=event), 400, field)
    assert field in message


def test_a_bad_event_in_a_batch_is_located(client: FlaskClient) -> None:
    events = [SEED_EVENT, {**SEED_EVENT, "ip": -5}]
    _error(client.post("/predict", json=events), 400, "[1].ip")
    _error(client.post("/predict", json=[SEED_EVENT, 7]), 400, "[1]")


@pytest.mark.parametrize("data, content_type, status", [
    ('{"ip": 1,', "application/json", 400),
    ("", "application/json", 400),
    ('"an event"', "application/json", 400),
    ("null", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    ("ip=1&app=2", "application/x-www-form-urlencoded", 415),
    ('{"ip": 1}', "text/plain", 415),
])
def test_bodies_that_are_not_an_event(client: FlaskClient, data: str | bytes,
                                      content_type: str, status: int) -> None:
    _error(client.post("/predict", data=data, content_type=content_type), status)


def test_huge_bodies_are_refused(client: FlaskClient) -> None:
    body = b'{"ip": 1, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    _error(client.post("/predict", data=body, content_type="application/json"), 413)


def test_wrong_method_and_path_answer_json(client: FlaskClient) -> None:
    response = client.get("/predict")
    _error(response, 405)
    assert "POST" in response.headers["Allow"]
    _error(client.post("/nope", json={}), 404)


def test_feature_store_failure_is_503_and_counted(client: FlaskClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    errors_before = _metric(client, "fraudflow_feature_store_errors_total")

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(EmbeddedCursor, "callproc", locked)
        assert "feature store" in _error(client.post("/predict", json=SEED_EVENT), 503)
        assert client.get("/readyz").status_code == 503
    assert _metric(client, "fraudflow_feature_store_errors_total") == errors_before + 2
    assert client.post("/predict", json=SEED_EVENT).status_code == 200  # reconnected


def test_a_bug_is_a_json_500_and_counted(client: FlaskClient,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: LoadedModel, matrix: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("a bug")

    before = _metric(client, "fraudflow_internal_errors_total")
    monkeypatch.setattr(LoadedModel, "predict", broken)
    assert _error(client.post("/predict", json=SEED_EVENT), 500) == "internal server error"
    assert _metric(client, "fraudflow_internal_errors_total") == before + 1


def test_one_event_scores_as_lightgbm_scores_a_batch(app: Flask) -> None:
    model = _holder(app).current
    assert model is not None
    rng = np.random.default_rng(0)
    events = np.column_stack([rng.choice([3, 9, 11, 12, 15], 50), rng.integers(0, 3, 50),
                              rng.choice([13, 15, 19], 50), rng.choice([245, 319, 379], 50),
                              rng.integers(0, 24, 50), rng.integers(6, 10, 50),
                              rng.integers(1, 200, (50, 3))]).astype(np.float64)
    events[::7, 1] = np.nan  # missing values: None in a row, as the deployment gives them
    expected = np.asarray(model.booster.predict(events))
    rows = [tuple(None if math.isnan(v) else v for v in event) for event in events.tolist()]
    assert np.allclose(model.predict(rows), expected, rtol=1e-12, atol=0)
    singles = [model.predict([row])[0] for row in rows]
    assert singles == expected.tolist()  # the same trees, the same double arithmetic


# --- decisions: the serving model's threshold ---------------------------------------------

def _seed_score(model_text: str, serving_data: ServingData, tmp_path: Path) -> float:
    """The seed event's score under a model, from a server of its own (default threshold)."""
    registry, _ = registry_serving(tmp_path / "seed-score", model_text)
    client = create_app({"STORE_URL": serving_data.store_url, "MODEL_DIR": str(registry.root),
                         "MODEL_POLL_INTERVAL": 0}).test_client()
    return float(client.post("/predict", json=SEED_EVENT).json["score"])  # type: ignore[index]


def _point(threshold: float | None, blocked: int = 600) -> OperatingPoint:
    """An operating point as training stores it: 40 installs, 2 lost, of 1000 clicks."""
    if threshold is None:
        return OperatingPoint(0.05, None, 1000, 4, 0, 0, refusal="the holdout has 4 installs")
    return OperatingPoint(0.05, threshold, 1000, 40, blocked, 2)


def _promote(app: Flask, registry: Registry, version: ModelVersion) -> None:
    registry.promote(version.version)
    _holder(app).follow_registry()


def test_a_model_decides_at_its_own_threshold(app: Flask, client: FlaskClient,
                                              model_registry: Registry,
                                              serving_data: ServingData, tmp_path: Path) -> None:
    score = _seed_score(serving_data.model_b, serving_data, tmp_path)
    for threshold, decision in ((score * 1.01, "fraud"), (score, "ok"), (score * 0.99, "ok")):
        _promote(app, model_registry, save_model(model_registry, serving_data.model_b,
                                                 operating_point=_point(threshold)))
        body = client.post("/predict", json=SEED_EVENT).json
        assert isinstance(body, dict)
        assert body["score"] == score
        assert (body["threshold"], body["threshold_source"], body["decision"]) == \
            (threshold, "model", decision)
        batch = client.post("/predict", json=[SEED_EVENT, SEED_EVENT]).json
        assert isinstance(batch, dict)
        assert (batch["threshold"], batch["threshold_source"]) == (threshold, "model")
        assert [p["decision"] for p in batch["predictions"]] == [decision] * 2


def test_the_environment_overrides_every_models_threshold(
        serving_data: ServingData, model_registry: Registry) -> None:
    with_point = save_model(model_registry, serving_data.model_b, operating_point=_point(0.0))
    model_registry.promote(with_point.version)
    config = {"STORE_URL": serving_data.store_url, "MODEL_DIR": str(model_registry.root),
              "MODEL_POLL_INTERVAL": 0}
    override = Settings.from_env({"FRAUDFLOW_PREDICT_THRESHOLD": "1"}).predict_threshold
    body = create_app({**config, "THRESHOLD": override}).test_client().post(
        "/predict", json=SEED_EVENT).json
    assert isinstance(body, dict)
    assert (body["threshold"], body["threshold_source"], body["decision"]) == \
        (1.0, "override", "fraud")
    unset = Settings.from_env({"FRAUDFLOW_PREDICT_THRESHOLD": ""}).predict_threshold
    body = create_app({**config, "THRESHOLD": unset}).test_client().post(
        "/predict", json=SEED_EVENT).json
    assert isinstance(body, dict)
    assert (body["threshold"], body["threshold_source"], body["decision"]) == \
        (0.0, "model", "ok")  # unset: the model's own again
    for bad in ("high", "1.5", "nan"):
        with pytest.raises(ConfigError, match="FRAUDFLOW_PREDICT_THRESHOLD"):
            Settings.from_env({"FRAUDFLOW_PREDICT_THRESHOLD": bad})


def test_a_model_without_a_threshold_decides_at_the_default(
        app: Flask, client: FlaskClient, model_registry: Registry,
        serving_data: ServingData) -> None:
    """Models trained before training chose an operating point, and those whose holdout had
    too few installs to choose one, decide as every model did before: below 0.5."""
    for point in (None, _point(None)):
        _promote(app, model_registry, save_model(model_registry, serving_data.model_b,
                                                 operating_point=point))
        body = client.post("/predict", json=SEED_EVENT).json
        assert isinstance(body, dict)
        assert (body["threshold"], body["threshold_source"]) == (0.5, "default")
        assert body["decision"] == ("fraud" if body["score"] < 0.5 else "ok")
        served = client.get("/models", headers=ADMIN).json
        assert isinstance(served, dict)
        assert served["current"]["operating_point"] == (point.to_dict() if point else None)


def test_a_model_with_a_malformed_threshold_is_refused(client: FlaskClient,
                                                       model_registry: Registry,
                                                       serving_data: ServingData) -> None:
    old = _served_version(client)
    bad = model_metadata(FEATURES, feature_sql("talkingdata"), database="demo_db",
                         deployment="demo", table="talkingdata")
    bad["operating_point"] = {**_point(0.01).to_dict(), "threshold": 2.0}
    version = model_registry.save(serving_data.model_b, bad)
    response = client.post("/update", headers=ADMIN, json={"model_path": str(version.path)})
    assert "threshold 2.0 is not a probability" in _error(response, 422)
    assert _served_version(client) == old


def test_a_swap_switches_model_and_threshold_together(app: Flask, model_registry: Registry,
                                                      serving_data: ServingData) -> None:
    """Under concurrent requests, every reply decides with the threshold of the model that
    scored it, while the served model swaps back and forth."""
    thresholds = {0.2: serving_data.model_a, 0.9: serving_data.model_b}
    versions = {save_model(model_registry, text, operating_point=_point(t)).version: t
                for t, text in thresholds.items()}
    stop = threading.Event()
    replies: list[dict[str, Any]] = []
    failures: list[str] = []

    def send() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.post("/predict", json=[SEED_EVENT, {**SEED_EVENT, "app": 3}])
            if response.status_code != 200:
                failures.append(response.text)
            else:
                replies.append(response.json)  # type: ignore[arg-type]

    senders = [threading.Thread(target=send) for _ in range(3)]
    for sender in senders:
        sender.start()
    try:
        for _ in range(10):
            for version in versions:
                model_registry.promote(version)
                _holder(app).follow_registry()
                time.sleep(0.02)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=10)
    assert failures == []
    seen = {reply["model_version"] for reply in replies}
    assert set(versions) <= seen, "the swaps did not interleave with the requests"
    for reply in replies:
        if reply["model_version"] not in versions:
            continue  # model A of the fixture, before the first swap
        threshold = versions[reply["model_version"]]
        assert (reply["threshold"], reply["threshold_source"]) == (threshold, "model")
        assert [p["decision"] for p in reply["predictions"]] == \
            ["fraud" if p["score"] < threshold else "ok" for p in reply["predictions"]]


# --- probes and metrics ---------------------------------------------------------------------

def test_health_and_readiness(client: FlaskClient, model_registry: Registry) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    production = model_registry.production()
    assert production is not None
    assert ready.json == {"ready": True, "model_version": production.version,
                          "feature_store": "ok"}


def test_without_a_model_the_server_is_alive_but_not_ready(tmp_path: Path,
                                                           serving_data: ServingData) -> None:
    client = create_app({"STORE_URL": serving_data.store_url,
                         "MODEL_DIR": str(tmp_path / "empty"),
                         "MODEL_POLL_INTERVAL": 0}).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    assert "no model" in _error(client.post("/predict", json=SEED_EVENT), 503)


def test_metrics_follow_the_requests(client: FlaskClient) -> None:
    client.post("/predict", json=[SEED_EVENT, SEED_EVENT])
    client.post("/predict", json={"ip": -1})
    text = client.get("/metrics").text
    for sample in ('fraudflow_requests_total{endpoint="/predict",status="200"}',
                   'fraudflow_requests_total{endpoint="/predict",status="400"}',
                   'fraudflow_request_duration_seconds_bucket{endpoint="/predict",le="0.005"}',
                   "fraudflow_feature_fetch_duration_seconds_count",
                   "fraudflow_inference_duration_seconds_count",
                   'fraudflow_score_bucket{le="0.01"}',
                   'fraudflow_decisions_total{decision="fraud",version="',
                   "fraudflow_model_trained_timestamp_seconds",
                   "fraudflow_model_info{"):
        assert sample in text, sample


def test_metrics_count_decisions_per_model_version(app: Flask, client: FlaskClient,
                                                   model_registry: Registry,
                                                   serving_data: ServingData) -> None:
    def decisions(version: str) -> dict[str, float]:
        return {decision: _metric(client, f'fraudflow_decisions_total{{decision="{decision}",'
                                          f'version="{version}"}}')
                for decision in ("fraud", "ok")}

    old = _served_version(client)
    assert _metric(client, f'fraudflow_model_decision_threshold{{version="{old}"}}') == 0.5
    # it decides at the default threshold: no expected share to compare with
    assert f'fraudflow_model_expected_blocked_share{{version="{old}"}}' not in \
        client.get("/metrics").text
    new = save_model(model_registry, serving_data.model_b,
                     operating_point=_point(1.0, blocked=600)).version
    _promote(app, model_registry, model_registry.get(new))
    # present from the swap on (counters are per process: another test of this session may
    # have served a model of the same text, hence the same version, within the same second)
    assert f'fraudflow_decisions_total{{decision="ok",version="{new}"}}' in \
        client.get("/metrics").text
    before_new, before_old = decisions(new), decisions(old)
    client.post("/predict", json=[SEED_EVENT] * 3)  # all below 1.0: fraud
    assert decisions(new) == {"fraud": before_new["fraud"] + 3, "ok": before_new["ok"]}
    assert decisions(old) == before_old
    assert _metric(client, f'fraudflow_model_decision_threshold{{version="{new}"}}') == 1.0
    assert _metric(client, f'fraudflow_model_expected_blocked_share{{version="{new}"}}') == 0.6


def test_metrics_export_the_served_models_score_baseline(client: FlaskClient,
                                                          model_registry: Registry,
                                                          serving_data: ServingData) -> None:
    def baseline() -> dict[str, float]:
        prefix = 'fraudflow_model_baseline_score_cdf{le="'
        return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in client.get("/metrics").text.splitlines()
                if line.startswith(prefix)}

    assert baseline() == {}  # model A was saved without one, as older models are
    cdf = {"0.01": 0.9, "0.5": 0.99, "1.0": 1.0, "+Inf": 1.0}
    version = save_model(model_registry, serving_data.model_b, score_cdf=cdf)
    response = client.post("/update", headers=ADMIN, json={"model_path": str(version.path)})
    assert response.status_code == 200, response.json
    assert baseline() == cdf
    assert client.post("/models/rollback", headers=ADMIN).status_code == 200
    assert baseline() == {}


# --- admin ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [("POST", "/update"), ("GET", "/models"),
                                          ("POST", "/models/reload"),
                                          ("POST", "/models/rollback")])
def test_admin_needs_the_token(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json={})
    _error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _error(client.open(path, method=method, json={},
                       headers={"Authorization": "Bearer wrong"}), 401)
    _error(client.open(path, method=method, json={},
                       headers={"Authorization": ADMIN_TOKEN}), 401)  # no scheme


def test_admin_is_off_without_a_configured_token(app: Flask, client: FlaskClient) -> None:
    app.config["ADMIN_TOKEN"] = None
    message = _error(client.get("/models", headers=ADMIN), 403)
    assert "FRAUDFLOW_ADMIN_TOKEN" in message


def test_models_lists_the_served_model_and_the_registry(client: FlaskClient,
                                                        model_registry: Registry) -> None:
    body = client.get("/models", headers=ADMIN).json
    assert isinstance(body, dict)
    production = model_registry.production()
    assert production is not None
    assert body["current"]["version"] == body["production_version"] == production.version
    assert body["current"]["feature_names"] == FEATURES
    assert body["previous"] is None
    assert [entry["version"] for entry in body["history"]] == [production.version]


def test_update_with_a_model_file_swaps_and_registers_it(
        client: FlaskClient, model_registry: Registry, serving_data: ServingData,
        tmp_path: Path) -> None:
    old = _served_version(client)
    old_score = client.post("/predict", json=SEED_EVENT).json["score"]  # type: ignore[index]
    model_file = tmp_path / "model.txt"
    model_file.write_text(serving_data.model_b)
    response = client.post("/update", headers=ADMIN, json={
        "model_path": str(model_file), "database": "demo_db", "deployment": "demo"})
    assert response.status_code == 200, response.json
    body = response.json
    assert isinstance(body, dict)
    new = body["current"]["version"]
    assert new != old and body["previous"]["version"] == old
    assert body["production_version"] == new
    assert new in body["versions"]
    assert _served_version(client) == new
    assert client.post("/predict", json=SEED_EVENT).json["score"] != old_score  # type: ignore[index]
    production = model_registry.production()
    assert production is not None and production.version == new
    assert production.model_file.read_text() == serving_data.model_b


def test_update_with_a_registry_version_promotes_it(client: FlaskClient,
                                                    model_registry: Registry,
                                                    serving_data: ServingData) -> None:
    version = save_model(model_registry, serving_data.model_b)
    versions_before = len(model_registry.versions())
    response = client.post("/update", headers=ADMIN,
                           json={"model_path": str(version.model_file)})
    assert response.status_code == 200, response.json
    assert _served_version(client) == version.version
    assert len(model_registry.versions()) == versions_before  # promoted, not copied
    elsewhere = client.post("/update", headers=ADMIN, json={
        "model_path": str(version.model_file), "deployment": "demo_1234abcd"})
    assert "omit database and deployment" in _error(elsewhere, 422)


def _model_on_other_features(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = lgb.Dataset(rng.random((200, 3)), rng.integers(0, 2, 200),
                       feature_name=["app", "hour", "clicks_last_minute"])
    path = tmp_path / "other.txt"
    params = {"objective": "binary", "verbose": -1, "num_threads": 1}
    path.write_text(lgb.train(params, data, 2).model_to_string())
    return path


def _regression_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = lgb.Dataset(rng.random((200, 9)) * 100, rng.random(200) * 50, feature_name=FEATURES)
    path = tmp_path / "regression.txt"
    params = {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    path.write_text(lgb.train(params, data, 5).model_to_string())
    return path


def _missing_file(tmp_path: Path) -> Path:
    return tmp_path / "missing.txt"


def _junk_file(tmp_path: Path) -> Path:
    path = tmp_path / "junk.txt"
    path.write_text("not a model")
    return path


def _multiclass_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = lgb.Dataset(rng.random((300, 9)) * 100, rng.integers(0, 3, 300),
                       feature_name=FEATURES)
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1}
    path = tmp_path / "multiclass.txt"
    path.write_text(lgb.train(params, data, 2).model_to_string())
    return path


@pytest.mark.parametrize("make_model, reason", [
    (_missing_file, "cannot read"),
    (_junk_file, "not a LightGBM"),
    (_model_on_other_features, "clicks_last_minute"),
    (_regression_model, "not one probability"),
    (_multiclass_model, "3 scores per event"),
])
def test_a_bad_model_is_rejected_and_the_old_one_serves_on(
        client: FlaskClient, model_registry: Registry, tmp_path: Path,
        make_model: Any, reason: str) -> None:
    old = _served_version(client)
    failures = _metric(client, "fraudflow_model_load_failures_total")
    versions = len(model_registry.versions())
    response = client.post("/update", headers=ADMIN,
                           json={"model_path": str(make_model(tmp_path))})
    assert reason in _error(response, 422)
    assert _served_version(client) == old
    assert _metric(client, "fraudflow_model_load_failures_total") == failures + 1
    assert len(model_registry.versions()) == versions  # nothing stored


def test_update_for_a_missing_deployment_is_refused(client: FlaskClient, tmp_path: Path,
                                                    serving_data: ServingData) -> None:
    model_file = tmp_path / "model.txt"
    model_file.write_text(serving_data.model_b)
    response = client.post("/update", headers=ADMIN,
                           json={"model_path": str(model_file), "deployment": "nope"})
    message = _error(response, 422)  # no retry makes a missing deployment appear: not a 503
    assert "nope" in message and "model rejected" in message


@pytest.mark.parametrize("body, field", [
    ({}, "model_path"),
    ({"model_path": ""}, "model_path"),
    ({"model_path": 3}, "model_path"),
    ({"model_path": "m.txt", "version": "x"}, "version"),
    ({"model_path": "m.txt", "database": "demo_db; DROP"}, "database"),
    ({"model_path": "m.txt", "deployment": 1}, "deployment"),
    ([], None),
])
def test_update_body_is_checked(client: FlaskClient, body: Any, field: str | None) -> None:
    _error(client.post("/update", headers=ADMIN, json=body), 400, field)


def test_rollback_returns_to_the_previous_model(client: FlaskClient, tmp_path: Path,
                                                serving_data: ServingData,
                                                model_registry: Registry) -> None:
    assert "no earlier" in _error(client.post("/models/rollback", headers=ADMIN), 409)
    first = _served_version(client)
    model_file = tmp_path / "model.txt"
    model_file.write_text(serving_data.model_b)
    second = client.post("/update", headers=ADMIN, json={"model_path": str(model_file)}) \
        .json["current"]["version"]  # type: ignore[index]
    response = client.post("/models/rollback", headers=ADMIN)
    assert response.status_code == 200
    assert _served_version(client) == first
    production = model_registry.production()
    assert production is not None and production.version == first
    client.post("/models/rollback", headers=ADMIN)  # a rollback of the rollback
    assert _served_version(client) == second


def test_workers_follow_the_registry(app: Flask, client: FlaskClient,
                                     model_registry: Registry,
                                     serving_data: ServingData) -> None:
    """What another worker's /update or the training workflow does: move the pointer."""
    old = _served_version(client)
    version = save_model(model_registry, serving_data.model_b)
    model_registry.promote(version.version)
    assert _served_version(client) == old  # until the next poll
    _holder(app).follow_registry()
    assert _served_version(client) == version.version


def test_a_bad_production_model_is_not_served(app: Flask, client: FlaskClient,
                                              model_registry: Registry) -> None:
    old = _served_version(client)
    junk = model_registry.save("not a model", {})
    model_registry.promote(junk.version)
    failures = _metric(client, "fraudflow_model_load_failures_total")
    _holder(app).follow_registry()
    _holder(app).follow_registry()  # not retried until the pointer moves
    assert _served_version(client) == old
    assert _metric(client, "fraudflow_model_load_failures_total") == failures + 1
    assert "not a LightGBM" in _error(client.post("/models/reload", headers=ADMIN), 422)
    assert client.get("/readyz").status_code == 200  # the old model still serves


def test_reload_serves_the_production_model_now(client: FlaskClient, model_registry: Registry,
                                                serving_data: ServingData) -> None:
    version = save_model(model_registry, serving_data.model_b)
    model_registry.promote(version.version)
    response = client.post("/models/reload", headers=ADMIN)
    assert response.status_code == 200
    assert response.json["current"]["version"] == version.version  # type: ignore[index]
    assert _served_version(client) == version.version


# --- what a failure means for the client: 503 only when retrying can help ------------------

@pytest.fixture
def own_store_client(tmp_path: Path, serving_data: ServingData,
                     model_registry: Registry) -> tuple[FlaskClient, str]:
    """A client of a server on a store of this test's own (the test changes its catalog)."""
    store_url = f"embedded://{tmp_path / 'own-store'}"
    init_store(store_url, "demo_db", "talkingdata", "demo")
    app = create_app({"TESTING": True, "STORE_URL": store_url,
                      "MODEL_DIR": str(model_registry.root), "ADMIN_TOKEN": ADMIN_TOKEN,
                      "MODEL_POLL_INTERVAL": 0})
    client = app.test_client()
    assert client.post("/predict", json=SEED_EVENT).status_code == 200
    return client, store_url


def _catalog(store_url: str, *statements: str) -> None:
    conn = features.connect(store_url, "demo_db")
    try:
        for statement in statements:
            conn.cursor().execute(statement)
    finally:
        conn.close()


def test_a_dropped_deployment_is_a_500_that_names_it(
        own_store_client: tuple[FlaskClient, str], caplog: pytest.LogCaptureFixture) -> None:
    client, store_url = own_store_client
    _catalog(store_url, "DROP DEPLOYMENT demo")
    message = _error(client.post("/predict", json=SEED_EVENT), 500)
    assert "demo_db.demo" in message and "retry" not in message
    assert "demo_db.demo" in caplog.text  # logged for the operator
    assert client.get("/readyz").status_code == 503


def test_a_deployment_that_lost_the_models_features_is_a_500_mismatch(
        own_store_client: tuple[FlaskClient, str]) -> None:
    client, store_url = own_store_client
    _catalog(store_url, "DROP DEPLOYMENT demo",
             "DEPLOY demo SELECT app, device, os, channel, hour(click_time) AS hour, "
             "is_attributed FROM talkingdata")
    message = _error(client.post("/predict", json=SEED_EVENT), 500)
    assert "no longer outputs the model's feature(s)" in message and "qty" in message


def test_the_metrics_pid_is_each_forked_childs_own() -> None:
    """Multiprocess metrics name their files by this pid, read once rather than per update."""
    pid = _remembered_pid()
    assert pid() == os.getpid()
    child = os.fork()
    if child == 0:  # the child answers by its exit code, at once
        os._exit(0 if pid() == os.getpid() != os.getppid() else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pid() == os.getpid()
