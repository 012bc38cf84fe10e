"""The workflow's steps one at a time: metrics, windows, import, split, gate, publish, alerts."""

from __future__ import annotations

import shutil
import subprocess
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from flask import Flask, Response, jsonify, request
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString
from werkzeug.serving import make_server

import features
from core.config import Settings
from core.exceptions import RegistryError
from core.registry import LABEL, SCORE_BUCKETS, OperatingPoint, Registry, operating_point_of
from tests.workflow_helpers import settings_in, synthetic_clicks, workflow_settings, write_lake
from workflows.alerting import write_textfile
from workflows.definition import build_definition
from workflows.evaluation import (
    average_precision,
    choose_operating_point,
    evaluate,
    log_loss,
    point_at,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from workflows.exceptions import PublishError, StepError
from workflows.gate import GateDecision, read_decision, validate
from workflows.lake_import import import_new_files
from workflows.layout import Layout, exclusive_lock, write_json
from workflows.plots import pr_position, roc_position, write_report
from workflows.publish import PublishTarget, publish
from workflows.report import report_rejection
from workflows.runner import run_workflow
from workflows.scheduler import next_fire
from workflows.sql import create_table_sql, run_script
from workflows.steps import StepContext
from workflows.training import fit, read_window, save_candidate, split_by_time
from workflows.window import Window

WINDOW_END = "2017110916"  # the synthetic clicks span 2017-11-06 16:00 … 11-09 16:00


# --- evaluation -----------------------------------------------------------------------------

def test_metrics_match_hand_computed_values() -> None:
    y = np.array([0.0, 0.0, 1.0, 1.0])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, p) == pytest.approx(0.75)
    # precision 1 at recall 0.5 (0.8), then 2/3 at recall 1 (0.35): AP = 0.5·1 + 0.5·2/3
    assert average_precision(y, p) == pytest.approx(0.5 + 0.5 * 2 / 3)
    expected = -np.mean([np.log(0.9), np.log(0.6), np.log(0.35), np.log(0.8)])
    assert log_loss(y, p) == pytest.approx(expected)
    assert roc_auc(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    one_class = evaluate([0, 0, 0], [0.1, 0.2, 0.3])
    assert (one_class.auc, one_class.pr_auc, one_class.positives) == (None, None, 0)


# --- operating points -----------------------------------------------------------------------

def _holdout(*groups: tuple[int, int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores from (count, label, score) groups."""
    labels = np.concatenate([np.full(n, label, dtype=np.float64) for n, label, _ in groups])
    scores = np.concatenate([np.full(n, score) for n, _, score in groups])
    return labels, scores


def test_operating_point_blocks_the_most_clicks_within_the_install_loss() -> None:
    # 40 installs: 5 % lets 2 go, so the threshold is the 3rd-lowest install's score (0.3)
    labels, scores = _holdout((60, 0, 0.05), (1, 1, 0.1), (1, 1, 0.2), (30, 0, 0.25),
                              (1, 1, 0.3), (10, 0, 0.5), (37, 1, 0.9))
    point = choose_operating_point(labels, scores, 0.05)
    assert point == OperatingPoint(0.05, 0.3, holdout_clicks=140, holdout_installs=40,
                                   blocked_clicks=92, lost_installs=2)
    assert (point.blocked_share, point.install_loss) == (92 / 140, 2 / 40)
    assert point.sentence() == (
        "Blocking clicks scored below 0.3 blocks 65.7% of the holdout's clicks (92 of 140) and "
        "loses 5.0% of its installs (2 of 40; target at most 5.0%).")
    # any higher threshold loses a 3rd install
    assert point_at(labels, scores, np.nextafter(0.3, 1), 0.05).lost_installs == 3
    assert OperatingPoint.from_dict(point.to_dict()) == point


def test_the_operating_point_sits_on_the_plotted_curves(tmp_path: Path) -> None:
    labels, scores = _holdout((60, 0, 0.05), (1, 1, 0.1), (1, 1, 0.2), (30, 0, 0.25),
                              (1, 1, 0.3), (10, 0, 0.5), (37, 1, 0.9))
    point = choose_operating_point(labels, scores, 0.05)
    fpr, tpr = roc_curve(labels, scores)
    # 10 of 100 non-installs (the 0.5s) pass, 38 of 40 installs are kept
    assert roc_position(point) == (0.1, 38 / 40)
    assert roc_position(point) in set(zip(fpr, tpr, strict=True))
    precision, recall, _ = precision_recall_curve(labels, scores)
    assert pr_position(point) == (38 / 40, 38 / 48)
    assert pr_position(point) in set(zip(recall, precision, strict=True))
    written = write_report(tmp_path, labels, {"candidate": scores}, {"app": 1.0},
                           {"candidate": point})
    assert [path.name for path in written] == ["roc.png", "pr.png", "feature_importance.png"]


def test_operating_point_with_installs_tied_at_the_threshold() -> None:
    # the 2nd and 3rd lowest installs tie at 0.3: blocking below 0.3 loses 1, at 0.3 it would
    # lose 3, more than the 2 allowed; a click scored exactly 0.3 is not blocked
    labels, scores = _holdout((50, 0, 0.01), (1, 1, 0.1), (2, 1, 0.3), (5, 0, 0.3),
                              (37, 1, 0.9))
    point = choose_operating_point(labels, scores, 0.05)
    assert (point.threshold, point.blocked_clicks, point.lost_installs) == (0.3, 51, 1)


def test_operating_point_counts_installs_without_float_error() -> None:
    # 0.29 * 100 is 28.999999999999996 in floats: still 29 installs may go
    labels, scores = _holdout(*[(1, 1, i / 100) for i in range(100)])
    assert choose_operating_point(labels, scores, 0.29).lost_installs == 29


@pytest.mark.parametrize("installs, refused", [(0, True), (19, True), (20, False)])
def test_too_few_installs_for_the_target_is_a_stated_refusal(installs: int,
                                                              refused: bool) -> None:
    labels, scores = _holdout((1000, 0, 0.01), *[(1, 1, 0.1 + i / 100) for i in range(installs)])
    point = choose_operating_point(labels, scores, 0.05)
    assert (point.threshold is None) == refused
    if refused:
        assert (point.blocked_share, point.install_loss, point.blocked_clicks) == (None, None, 0)
        assert point.refusal is not None and f"has {installs} install(s)" in point.refusal
        assert "at least 20 installs" in point.refusal
        assert point.sentence().startswith("No operating point: the holdout has")
        assert OperatingPoint.from_dict(point.to_dict()) == point
    else:  # 20 installs: one may go, the threshold is the 2nd-lowest install's score
        assert (point.threshold, point.lost_installs, point.blocked_clicks) == (0.11, 1, 1001)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=1, max_size=300),
       st.sampled_from([0.05, 0.1, 0.25, 0.5]))
def test_no_threshold_blocks_more_within_the_target(rows: list[tuple[bool, int]],
                                                    loss: float) -> None:
    labels = np.array([label for label, _ in rows], dtype=np.float64)
    scores = np.array([score / 20 for _, score in rows])  # coarse: many ties
    point = choose_operating_point(labels, scores, loss)
    allowed = int(loss * labels.sum() + 1e-9)
    candidates = [point_at(labels, scores, t, loss) for t in [*np.unique(scores), 2.0]]
    within = [c for c in candidates if c.lost_installs <= allowed]
    if allowed == 0:
        assert point.threshold is None
        return
    assert point.lost_installs <= allowed
    assert point.blocked_clicks == max(c.blocked_clicks for c in within)


def test_a_malformed_operating_point_is_named() -> None:
    good = choose_operating_point(*_holdout((10, 0, 0.1), (40, 1, 0.5)), 0.05).to_dict()
    assert operating_point_of({}) is None
    for change, message in (({"threshold": 1.5}, "threshold 1.5 is not a probability"),
                            ({"lost_installs": -1}, "lost_installs -1 is not a count"),
                            ({"threshold": None}, "no threshold and no refusal")):
        with pytest.raises(RegistryError, match=message):
            operating_point_of({"operating_point": {**good, **change}})


# --- windows --------------------------------------------------------------------------------

def test_window_ends_are_wall_clock_hours_in_utc8() -> None:
    window = Window.ending("2017110616", 24)
    assert window.end == datetime(2017, 11, 6, 16)
    assert window.end_ms == 1_509_955_200_000  # 2017-11-06 08:00 UTC
    assert window.start_ms == window.end_ms - 24 * 3_600_000
    assert Window.ending("2017-11-06 16:42:10", 24) == window
    utc = datetime(2017, 11, 6, 8, 5, tzinfo=UTC)
    assert Window.ending(utc.isoformat(), 24) == window
    assert Window.ending((utc + timedelta(hours=1)).isoformat(), 24).id == "2017110617"
    with pytest.raises(StepError, match="neither yyyyMMddHH"):
        Window.ending("yesterday", 24)


# --- import ---------------------------------------------------------------------------------

def _context(root: Path, **overrides: object) -> StepContext:
    settings = settings_in(root)
    workflow = workflow_settings(**overrides)
    return StepContext(settings, workflow, Layout.under(settings.var_dir),
                       Window.ending(WINDOW_END, workflow.training_hours))


def _offline_count(settings: Settings) -> int:
    conn = features.connect(settings.store_url, settings.database)
    try:
        rows = conn.cursor().execute(f"SELECT count(*) AS n FROM {settings.table}").fetchall()
        return int(rows[0][0])
    finally:
        conn.close()


def _create_table(ctx: StepContext) -> None:
    run_script(ctx.settings, "offline", create_table_sql(ctx.settings))


def test_import_loads_each_lake_file_once(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    lake = ctx.settings.lake_dir
    first = synthetic_clicks(3_000, seed=1, hours=6)  # 2017-11-06 16:00 … 22:00
    write_lake(first, lake, "first")
    (lake / "clicks" / "date=2017-11-06" / "hour=16" / ".half-written.parquet").write_bytes(b"")
    _create_table(ctx)
    early = Window.ending("2017110619", 24)  # hours 16, 17 and 18 are due
    result = import_new_files(ctx.settings, ctx.layout, early)
    due = int((first["click_time"] < "2017-11-06 19:00").sum())
    assert (result.files, result.rows, result.already_imported, result.not_yet_due) == \
        (3, due, 0, 3)
    assert _offline_count(ctx.settings) == due

    again = import_new_files(ctx.settings, ctx.layout, early)
    assert (again.files, again.rows, again.already_imported) == (0, 0, 3)
    # late files of imported hours, and the hours that were not due: only those load
    late = synthetic_clicks(2_000, seed=2, hours=6)
    write_lake(late, lake, "late")
    later = import_new_files(ctx.settings, ctx.layout, Window.ending("2017110700", 24))
    assert (later.files, later.rows, later.already_imported) == (9, len(first) + len(late) - due,
                                                                  3)
    assert _offline_count(ctx.settings) == len(first) + len(late)
    assert not list(ctx.layout.staging.rglob("*.parquet"))  # staging cleaned up


# --- a trained production model, shared by the gate tests -------------------------------------

@pytest.fixture
def production(tmp_path: Path) -> StepContext:
    """A store, lake and registry after one completed run that published a model."""
    ctx = _context(tmp_path)
    write_lake(synthetic_clicks(60_000, seed=3), ctx.settings.lake_dir)
    definition = build_definition(ctx.settings, ctx.workflow, ctx.layout)
    run = run_workflow(definition, ctx, echo=lambda line: None)
    assert run.completed and run.branch == "deploy", run
    return ctx


def test_split_holds_out_the_newest_clicks(production: StepContext) -> None:
    ctx = production
    frame = read_window(ctx.layout.features(ctx.window.id), ctx.window)
    split = split_by_time(frame, ctx.window, 0.2)
    assert len(split.holdout) == round(len(frame) * 0.2)
    assert split.train["click_time"].max() <= split.holdout["click_time"].min()
    assert split.feature_names == ["app", "device", "os", "channel", "hour", "day", "qty",
                                   "ip_app_count", "ip_app_os_count"]


def test_only_the_window_is_read_whatever_the_timestamp_type(tmp_path: Path) -> None:
    ms = np.array([1_509_955_200_000 - 1, 1_509_955_200_000, 1_510_041_599_999,
                   1_510_041_600_000])  # around 2017-11-06 16:00 … 11-07 16:00 (UTC+8)
    frame = pd.DataFrame({"click_time": ms, LABEL: [0, 1, 0, 1], "app": [1, 2, 3, 4]})
    window = Window.ending("2017110716", 24)
    for kind, column in (("int", ms), ("timestamp", pd.to_datetime(ms, unit="ms", utc=True))):
        folder = tmp_path / kind
        folder.mkdir()
        frame.assign(click_time=column).to_parquet(folder / "part-00000.parquet")
        read = read_window(folder, window)
        assert read["click_time"].tolist() == ms[1:3].tolist(), kind
        assert read["app"].tolist() == [2, 3]


def test_metadata_of_the_production_model(production: StepContext) -> None:
    model = Registry(production.settings.model_dir).production()
    assert model is not None
    metadata = model.metadata
    assert metadata["feature_names"] == lgb.Booster(model_file=str(model.model_file)) \
        .feature_name()
    assert metadata["categorical_features"] == ["app", "device", "os", "channel", "hour"]
    assert set(metadata["metrics"]) == {"auc", "pr_auc", "logloss", "rows", "positives"}
    assert metadata["deployment"].startswith("demo_")
    assert metadata["data_window"]["end"] == "2017-11-09 16:00:00"
    # the holdout's score CDF on the serving histogram's buckets, keyed as /metrics labels them
    cdf = metadata["score_cdf"]
    bounds = sorted(cdf, key=float)  # metadata.json sorts its keys as strings
    assert bounds == [*map(floatToGoString, SCORE_BUCKETS), "+Inf"]
    fractions = [cdf[le] for le in bounds]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {p.name for p in (model.path / "report").iterdir()} == {
        "roc.png", "pr.png", "feature_importance.png"}
    # the operating point: chosen on the holdout for the default target, as the gate sees it
    point = operating_point_of(metadata)
    assert point is not None and point.threshold is not None
    assert point.max_install_loss == 0.05
    holdout = pd.read_parquet(production.layout.holdout(production.window.id))
    assert (point.holdout_clicks, point.holdout_installs) == (len(holdout),
                                                              int(holdout[LABEL].sum()))
    assert point.lost_installs <= 0.05 * point.holdout_installs
    gate = read_decision(production.layout, production.window)
    assert gate.candidate_operating_point == metadata["operating_point"]


def test_gate_rejects_a_candidate_trained_on_shuffled_labels(production: StepContext) -> None:
    ctx = production
    registry = Registry(ctx.settings.model_dir)
    serving = registry.production()
    assert serving is not None
    frame = read_window(ctx.layout.features(ctx.window.id), ctx.window)
    split = split_by_time(frame, ctx.window, 0.2)
    rng = np.random.default_rng(7)
    shuffled = split.train.assign(**{LABEL: rng.permutation(split.train[LABEL].to_numpy())})
    worse, _, _ = save_candidate(fit(shuffled, split.feature_names), split, ctx.settings,
                                 ctx.layout, ctx.window, 0.05)

    decision = validate(ctx.settings, ctx.layout, ctx.window, workflow_settings(auc_floor=0.5))
    assert not decision.passed
    assert decision.candidate_version == worse.version
    assert decision.production_version == serving.version
    assert any("worse than production" in reason for reason in decision.reasons)
    assert decision.production_metrics is not None
    assert decision.decided_by == "auc_vs_production"
    assert {c["rule"]: c["passed"] for c in decision.checks} == {
        "auc_floor": True, "operating_point": True, "auc_vs_production": False,
        "pr_auc_vs_production": False, "blocked_vs_production": False}

    summary = report_rejection(ctx.settings, ctx.layout, ctx.window)
    assert "worse than production" in summary and "by rule auc_vs_production" in summary
    report = ctx.layout.rejection(ctx.window.id).read_text()
    assert f"Production stays {serving.version}" in report and "roc.png" in report
    assert "Decided by the rule `auc_vs_production`" in report
    assert "| blocked_vs_production | FAIL |" in report
    candidate_point = OperatingPoint.from_dict(decision.candidate_operating_point)
    assert f"- candidate: {candidate_point.sentence()}" in report
    with pytest.raises(PublishError, match="rejected"):
        publish(ctx.settings, ctx.layout, ctx.window, PublishTarget((), None, 0, 1.0))
    production_now = registry.production()
    assert production_now is not None and production_now.version == serving.version
    metrics = ctx.layout.metrics_file.read_text()
    assert "fraudflow_workflow_candidate_rejected_total 1.0" in metrics
    report_rejection(ctx.settings, ctx.layout, ctx.window)  # re-run: counted once
    assert "fraudflow_workflow_candidate_rejected_total 1.0" in \
        ctx.layout.metrics_file.read_text()


def _retrained_candidate(ctx: StepContext, max_install_loss: float = 0.05,
                         shuffle: bool = True) -> str:
    """A candidate on the window's own split: one that learnt nothing (labels shuffled), or
    production's very model (chosen for `max_install_loss`)."""
    split = split_by_time(read_window(ctx.layout.features(ctx.window.id), ctx.window),
                          ctx.window, 0.2)
    train = split.train
    if shuffle:
        rng = np.random.default_rng(7)
        train = train.assign(**{LABEL: rng.permutation(train[LABEL].to_numpy())})
    version, _, _ = save_candidate(fit(train, split.feature_names), split, ctx.settings,
                                   ctx.layout, ctx.window, max_install_loss)
    return version.version


def test_the_blocked_share_rule_decides_alone(production: StepContext) -> None:
    """With the AUC and PR-AUC rules out of the way, the clicks blocked at the same install
    loss decide: the shuffled model blocks far fewer than production."""
    ctx = production
    _retrained_candidate(ctx)
    lenient = {"auc_floor": 0.0, "max_auc_drop": 1.0, "max_pr_auc_drop": 1.0}
    strict = validate(ctx.settings, ctx.layout, ctx.window,
                      workflow_settings(**lenient, max_blocked_drop=0.05))
    assert strict.decided_by == "blocked_vs_production", strict.checks
    assert strict.reasons == [c["detail"] for c in strict.checks if not c["passed"]]
    assert len(strict.reasons) == 1 and "fewer, more than the allowed shortfall of 5.0%" in \
        strict.reasons[0]
    ours = OperatingPoint.from_dict(strict.candidate_operating_point)
    theirs = OperatingPoint.from_dict(strict.production_operating_point)
    # the same install loss: the same holdout and target let the same installs go
    assert ours.lost_installs == theirs.lost_installs == 2
    assert ours.blocked_share is not None and theirs.blocked_share is not None
    shortfall = theirs.blocked_share - ours.blocked_share
    assert shortfall > 0.05
    tolerant = validate(ctx.settings, ctx.layout, ctx.window,
                        workflow_settings(**lenient, max_blocked_drop=shortfall + 0.01))
    assert tolerant.passed and tolerant.decided_by == "all checks passed"


def test_production_against_itself_passes_every_rule(production: StepContext) -> None:
    ctx = production
    decision = validate(ctx.settings, ctx.layout, ctx.window, ctx.workflow)
    assert decision.candidate_version == decision.production_version  # the same model
    assert [(c["rule"], c["passed"]) for c in decision.checks] == [
        ("auc_floor", True), ("operating_point", True), ("auc_vs_production", True),
        ("pr_auc_vs_production", True), ("blocked_vs_production", True)]
    assert decision.candidate_operating_point == decision.production_operating_point
    assert read_decision(ctx.layout, ctx.window).to_dict() == decision.to_dict()


def test_too_few_installs_for_the_target_rejects_the_candidate(production: StepContext) -> None:
    ctx = production
    registry = Registry(ctx.settings.model_dir)
    serving = registry.production()
    assert serving is not None
    # 0.1 % of the holdout's installs: at least 1000 installs needed, the holdout has ~40.
    # Production's model itself, but without its operating point: a version of its own.
    refused = registry.get(_retrained_candidate(ctx, max_install_loss=0.001, shuffle=False))
    assert refused.version != serving.version
    assert refused.model_file.read_text() == serving.model_file.read_text()
    stored = operating_point_of(refused.metadata)
    assert stored is not None and stored.threshold is None
    assert stored.refusal is not None and "at least 1000 installs" in stored.refusal
    decision = validate(ctx.settings, ctx.layout, ctx.window,
                        workflow_settings(max_install_loss=0.001))
    assert decision.decided_by == "operating_point"
    assert decision.reasons[0].startswith("no operating point for the candidate: the holdout "
                                          "has")
    report_rejection(ctx.settings, ctx.layout, ctx.window)
    assert "No operating point: the holdout has" in \
        ctx.layout.rejection(ctx.window.id).read_text()
    production_now = registry.production()
    assert production_now is not None and production_now.version == serving.version


# --- publish --------------------------------------------------------------------------------

class PredictServer:
    """A stand-in predict server: records /update calls, answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        app = Flask(__name__)
        app.add_url_rule("/update", "update", self.update, methods=["POST"])
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def update(self) -> tuple[Response, int]:
        self.calls.append({"body": request.get_json(),
                           "auth": request.headers.get("Authorization")})
        status = self.statuses.pop(0) if self.statuses else 200
        return jsonify(ok=status == 200), status

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()


@pytest.fixture
def servers() -> Iterator[list[PredictServer]]:
    started: list[PredictServer] = []
    yield started
    for server in started:
        server.close()


def _accepted_candidate(ctx: StepContext, tag: str) -> str:
    """A tiny model in the registry with a passing gate decision for the window."""
    rng = np.random.default_rng(zlib.crc32(tag.encode()))  # a distinct model per tag
    data = lgb.Dataset(pd.DataFrame({"app": rng.integers(0, 5, 200)}),
                       label=rng.integers(0, 2, 200))
    model = lgb.train({"objective": "binary", "verbose": -1}, data, num_boost_round=2)
    version = Registry(ctx.settings.model_dir).save(
        model.model_to_string(), {"feature_names": ["app"], "database": "demo_db",
                                  "deployment": f"demo_{tag}", "metrics": {"auc": 0.9}})
    decision = GateDecision(ctx.window.id, version.version, {"auc": 0.9}, None, None, 0.7, 0.02)
    write_json(ctx.layout.gate(ctx.window.id), decision.to_dict())
    return version.version


def _target(urls: list[str], retries: int = 2) -> PublishTarget:
    return PublishTarget(urls, "s3cret", retries, 5.0)


def test_publish_updates_every_server_then_promotes(tmp_path: Path,
                                                    servers: list[PredictServer]) -> None:
    ctx = _context(tmp_path)
    version = _accepted_candidate(ctx, "a")
    servers += [PredictServer(), PredictServer([503, 503])]  # the second recovers on retry
    summary = publish(ctx.settings, ctx.layout, ctx.window,
                      _target([servers[0].url, servers[1].url + "/update"]))
    assert "2 predict server(s)" in summary
    model_file = ctx.settings.model_dir.absolute() / "versions" / version / "model.txt"
    expected = {"model_path": str(model_file), "database": "demo_db", "deployment": "demo_a"}
    assert [c["body"] for c in servers[0].calls] == [expected]
    assert [c["body"] for c in servers[1].calls] == [expected] * 3
    assert {c["auth"] for s in servers for c in s.calls} == {"Bearer s3cret"}
    production = Registry(ctx.settings.model_dir).production()
    assert production is not None and production.version == version
    assert 'fraudflow_workflow_runs_total{outcome="published"} 1.0' in \
        ctx.layout.metrics_file.read_text()


def test_a_failing_server_leaves_the_old_model_everywhere(tmp_path: Path,
                                                          servers: list[PredictServer]) -> None:
    ctx = _context(tmp_path)
    registry = Registry(ctx.settings.model_dir)
    old = _accepted_candidate(ctx, "old")
    registry.promote(old)
    new = _accepted_candidate(ctx, "new")
    servers += [PredictServer(), PredictServer([500])]
    with pytest.raises(PublishError, match=r"1 of 2 predict server\(s\) did not take") as error:
        publish(ctx.settings, ctx.layout, ctx.window, _target([s.url for s in servers]))
    assert f"switched back to {old}" in str(error.value)
    paths = [Path(c["body"]["model_path"]).parent.name for c in servers[0].calls]
    assert paths == [new, old]  # took the new model, then was given the old one back
    production = registry.production()
    assert production is not None and production.version == old


def test_no_server_answering_promotes_nothing(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _accepted_candidate(ctx, "lonely")
    with pytest.raises(PublishError, match="no server switched"):
        publish(ctx.settings, ctx.layout, ctx.window,
                _target(["http://127.0.0.1:9"], retries=1))  # discard port: refused
    assert Registry(ctx.settings.model_dir).production() is None


def test_without_servers_publishing_is_promoting(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    version = _accepted_candidate(ctx, "solo")
    assert read_decision(ctx.layout, ctx.window).passed
    publish(ctx.settings, ctx.layout, ctx.window, _target([]))
    publish(ctx.settings, ctx.layout, ctx.window, _target([]))  # re-run: promoted once
    registry = Registry(ctx.settings.model_dir)
    assert [entry["version"] for entry in registry.history()] == [version]


# --- metrics for alerting ---------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_metrics_textfile_is_valid_prometheus_text(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _accepted_candidate(ctx, "m")
    publish(ctx.settings, ctx.layout, ctx.window, _target([]))
    path = write_textfile(ctx.layout, ctx.settings.model_dir)
    text = path.read_text()
    for name in ("last_run_timestamp_seconds", "last_success_timestamp_seconds",
                 "candidate_auc", "production_auc", "candidate_rejected_total",
                 "production_model_trained_timestamp_seconds"):
        assert f"fraudflow_workflow_{name} " in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                             capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- runs and schedules -------------------------------------------------------------------------

def test_one_run_at_a_time(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    definition = build_definition(ctx.settings, ctx.workflow, ctx.layout)
    with exclusive_lock(ctx.layout.run_lock, "a test"), \
            pytest.raises(StepError, match="already running"):
        run_workflow(definition, ctx, echo=lambda line: None)


def test_schedule_fires_in_shanghai_time() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    after = datetime(2024, 1, 1, 2, 0, 0, tzinfo=shanghai)
    assert next_fire("0 0 2 * * ? *", after) == datetime(2024, 1, 2, 2, tzinfo=shanghai)
    assert next_fire("0 30 * ? * MON-FRI *", datetime(2024, 1, 6, 12, tzinfo=shanghai)) == \
        datetime(2024, 1, 8, 0, 30, tzinfo=shanghai)  # Saturday → Monday
    fire = next_fire("0 0 2 * * ? *", datetime(2024, 1, 1, tzinfo=UTC))
    assert Window.ending(fire.isoformat(), 1).id == "2024010202"  # 08:00 in Shanghai → 02:00
