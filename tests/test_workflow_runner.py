"""The embedded runner end to end: synthetic and real clicks, re-runs, a live predict server,
and the scheduler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

import features
from core.config import Settings
from core.registry import Registry
from tests.workflow_helpers import sample_clicks, settings_in, synthetic_clicks, write_lake
from workflows.cli import workflow
from workflows.sql import deployment_name

TASKS = ["create_table", "import", "extract", "train", "validate", "gate", "deploy",
         "load_online", "publish", "report"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workflow settings for the 2017 clicks: a 96 h window, a floor the small samples reach."""
    monkeypatch.setenv("FRAUDFLOW_TRAINING_HOURS", "96")
    monkeypatch.setenv("FRAUDFLOW_AUC_FLOOR", "0.6")


def _run(settings: Settings, window_end: str, *args: str) -> Result:
    return CliRunner().invoke(workflow, ["run", "--window-end", window_end, *args],
                              obj=settings)


def _count(settings: Settings, mode: str) -> int:
    conn = features.connect(settings.store_url, settings.database)
    try:
        cursor = conn.cursor()
        cursor.execute(f"SET @@execute_mode='{mode}'")
        if mode == "offline":
            return int(cursor.execute(f"SELECT count(*) AS n FROM {settings.table}")
                       .fetchall()[0][0])
        return len(cursor.execute(f"SELECT ip FROM {settings.table}").fetchall())
    finally:
        conn.close()


def _last_run(settings: Settings) -> dict[str, object]:
    runs = sorted((settings.var_dir.absolute() / "workflow" / "runs").iterdir())
    return dict(json.loads((runs[-1] / "run.json").read_text()))


def test_whole_workflow_on_synthetic_clicks_and_reruns(tmp_path: Path, env: None) -> None:
    settings = settings_in(tmp_path)
    clicks = synthetic_clicks(100_000, seed=5)
    write_lake(clicks, settings.lake_dir)

    started = time.monotonic()
    first = _run(settings, "2017110916")
    took = time.monotonic() - started
    assert first.exit_code == 0, first.output
    for task in TASKS:
        assert f" {task} " in first.output
    assert "completed" in first.output and "gate chose deploy" in first.output
    run = _last_run(settings)
    assert run["status"] == "completed" and run["branch"] == "deploy"
    tasks = {t["name"]: t for t in run["tasks"]}  # type: ignore[attr-defined]
    assert tasks["report"]["status"] == "skipped" and tasks["publish"]["status"] == "success"
    run_dir = settings.var_dir.absolute() / "workflow" / "runs" / str(run["run_id"])
    assert "candidate" in (run_dir / "train.log").read_text()

    registry = Registry(settings.model_dir)
    production = registry.production()
    assert production is not None
    assert production.metadata["deployment"] == deployment_name(settings)
    assert (_count(settings, "offline"), _count(settings, "online")) == (len(clicks),) * 2
    metrics = (settings.var_dir / "metrics" / "workflow.prom").read_text()
    assert 'fraudflow_workflow_runs_total{outcome="published"} 1.0' in metrics
    print(f"\nfirst run on {len(clicks)} clicks: {took:.1f}s")

    # the same window again: nothing imported twice, DEPLOY and the online table left alone
    again = _run(settings, "2017110916")
    assert again.exit_code == 0, again.output
    assert "imported 0 new lake file(s)" in again.output
    assert "already has rows" in again.output
    assert (_count(settings, "offline"), _count(settings, "online")) == (len(clicks),) * 2
    assert [entry["version"] for entry in registry.history()] == [production.version]

    # single steps, as DolphinScheduler's tasks run them: DEPLOY again, the gate's output
    deploy = CliRunner().invoke(workflow, ["step", "deploy", "--window-end", "2017110916"],
                                obj=settings)
    assert deploy.exit_code == 0, deploy.output
    validate = CliRunner().invoke(workflow, ["step", "validate", "--window-end", "2017110916",
                                             "--emit-params"], obj=settings)
    assert validate.exit_code == 0, validate.output
    assert "${setValue(gate=pass)}" in validate.output
    gate = CliRunner().invoke(workflow, ["step", "gate"], obj=settings)
    assert gate.exit_code == 2 and "choose one of create_table, import" in gate.output

    # a day later with a day of new clicks: only those are imported
    new_day = synthetic_clicks(30_000, seed=6, hours=24)
    new_day["click_time"] += pd.Timedelta(hours=72)
    write_lake(new_day, settings.lake_dir, "next-day")
    later = _run(settings, "2017111016")
    assert later.exit_code == 0, later.output
    assert "imported 24 new lake file(s), 30000 rows; 72 already imported" in later.output
    assert _count(settings, "offline") == len(clicks) + len(new_day)
    published = "gate chose deploy" in later.output
    assert len(registry.history()) == (2 if published else 1)


def test_whole_workflow_on_the_real_samples(tmp_path: Path, env: None) -> None:
    settings = settings_in(tmp_path)
    write_lake(sample_clicks("train_sample.csv"), settings.lake_dir, "sample-head")
    write_lake(sample_clicks("train_sample_days.csv"), settings.lake_dir, "sample-days")
    result = _run(settings, "2017110916")
    assert result.exit_code == 0, result.output  # completed, whichever branch
    run = _last_run(settings)
    assert run["status"] == "completed" and run["branch"] in {"deploy", "report"}
    assert _count(settings, "offline") == 20_000
    work = settings.var_dir.absolute() / "workflow" / "work" / "2017110916"
    gate = json.loads((work / "gate.json").read_text())
    print(f"\nreal samples: gate {gate['outcome']}, candidate {gate['candidate_metrics']}")
    if run["branch"] == "report":
        assert (work / "rejection.md").exists()
        assert Registry(settings.model_dir).production() is None
    else:
        assert Registry(settings.model_dir).production() is not None


def test_a_window_without_clicks_says_where_the_data_is(tmp_path: Path, env: None) -> None:
    settings = settings_in(tmp_path)
    write_lake(sample_clicks("train_sample_days.csv"), settings.lake_dir)
    result = _run(settings, "2026120109")  # replaying 2017 clicks with today's window
    assert result.exit_code == 1, result.output
    assert "0 clicks in the window 2026-11-27 09:00:00 to 2026-12-01 09:00:00 (UTC+8)" \
        in result.output
    assert "clicks from 2017-11-06 16:00:14 to 2017-11-09 15:59:44" in result.output
    assert "--window-end 2017110916" in result.output


def test_a_failing_task_fails_the_run_and_skips_the_rest(tmp_path: Path, env: None) -> None:
    settings = settings_in(tmp_path)  # an empty lake: nothing to train on
    result = _run(settings, "2017110916")
    assert result.exit_code == 1, result.output
    run = _last_run(settings)
    statuses = {t["name"]: t["status"] for t in run["tasks"]}  # type: ignore[attr-defined]
    assert statuses["train"] == "failed" and statuses["import"] == "success"
    assert {statuses[name] for name in TASKS[4:]} == {"skipped"}
    run_dir = settings.var_dir.absolute() / "workflow" / "runs" / str(run["run_id"])
    assert "Traceback" in (run_dir / "train.log").read_text()
    assert "0 clicks in the window" in result.output
    assert "holds no clicks at all" in result.output
    metrics = (settings.var_dir / "metrics" / "workflow.prom").read_text()
    assert 'fraudflow_workflow_runs_total{outcome="failed"} 1.0' in metrics
    assert "fraudflow_workflow_last_success_timestamp_seconds" not in metrics


@pytest.fixture
def predict_server(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """The real predict server (serving.create_app) on the test's store and registry."""
    serving = pytest.importorskip("serving")
    settings = settings_in(tmp_path).with_overrides(admin_token="admin-secret")
    app = serving.create_app({
        "STORE_URL": settings.store_url, "DATABASE": settings.database,
        "DEPLOYMENT": settings.deployment, "MODEL_DIR": str(settings.model_dir),
        "ADMIN_TOKEN": settings.admin_token, "MODEL_POLL_INTERVAL": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield settings, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_publishing_to_a_live_predict_server(predict_server: tuple[Settings, str], env: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings, url = predict_server
    monkeypatch.setenv("FRAUDFLOW_PREDICT_URLS", url)
    write_lake(synthetic_clicks(60_000, seed=8), settings.lake_dir)
    result = _run(settings, "2017110916")
    assert result.exit_code == 0, result.output
    assert "is production (1 predict server(s))" in result.output
    production = Registry(settings.model_dir).production()
    assert production is not None
    request = urllib.request.Request(f"{url}/models",
                                     headers={"Authorization": "Bearer admin-secret"})
    with urllib.request.urlopen(request, timeout=10) as response:
        served = json.load(response)
    assert served["current"]["version"] == production.version
    assert served["current"]["deployment"] == deployment_name(settings)
    assert [entry["version"] for entry in served["history"]] == [production.version]


def test_scheduler_runs_on_its_cron_serves_metrics_and_stops(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    write_lake(synthetic_clicks(20_000, seed=9), settings.lake_dir)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "FRAUDFLOW_STORE_URL": settings.store_url,
           "FRAUDFLOW_VAR_DIR": str(settings.var_dir), "FRAUDFLOW_LAKE_DIR": str(
               settings.lake_dir), "FRAUDFLOW_MODEL_DIR": str(settings.model_dir),
           "FRAUDFLOW_WORKFLOW_CRON": "*/2 * * * * ? *",  # every other second
           "FRAUDFLOW_TRAINING_HOURS": str(24 * 365 * 12),  # reaches back to the 2017 clicks
           "FRAUDFLOW_AUC_FLOOR": "0.5", "FRAUDFLOW_WORKFLOW_METRICS_PORT": str(port)}
    script = ("from fraudflow.cli import main\nfrom workflows.cli import commands\n"
              "for command in commands:\n    main.add_command(command)\n"
              "main(['scheduler'])")
    process = subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        runs = settings.var_dir / "workflow" / "runs"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = [json.loads(p.read_text()) for p in runs.glob("*/run.json")] \
                if runs.exists() else []
            if any(run["status"] != "running" for run in done):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the scheduler did not finish a run in time")
        assert any(run["status"] == "completed" for run in done), done
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "fraudflow_workflow_last_success_timestamp_seconds" in metrics
        assert "fraudflow_workflow_runs_total" in metrics
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "scheduler stopped" in output
