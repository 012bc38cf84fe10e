"""The retraining workflow on a real DolphinScheduler 3.1.1 server: submitted (twice: the same
definition), scheduled, run on an embedded store whose lake holds the real sample plus
synthetic clicks, gated both ways, published to a live predict server, and failing visibly.

The runs share one store, lake and registry, in order: pass → publish, then reject (production
unchanged), then a failing task.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from core.config import Settings
from core.registry import Registry
from tests.fixtures_dolphinscheduler import DolphinScheduler
from tests.serving_helpers import ADMIN_TOKEN, SEED_EVENT
from tests.workflow_helpers import sample_clicks, settings_in, synthetic_clicks, write_lake
from workflows.cli import workflow
from workflows.definition import build_definition
from workflows.dolphin import submit
from workflows.dolphin_runs import FINAL_STATES, project_code, rest_session, schedule_of
from workflows.layout import Layout

pytestmark = pytest.mark.dolphinscheduler

WINDOW_END = "2017110917"  # the sample and the synthetic clicks end 2017-11-09 16:00 (UTC+8)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass(frozen=True)
class Stack:
    settings: Settings
    predict_url: str
    ds: DolphinScheduler

    def submit(self, *args: str, **env: str) -> Result:
        variables = {**self.ds.env(), "FRAUDFLOW_TRAINING_HOURS": "96",
                     "FRAUDFLOW_AUC_FLOOR": "0.6", "FRAUDFLOW_PREDICT_URLS": self.predict_url,
                     # the window's holdout has a handful of installs: an operating point
                     # can only be chosen with a loose install-loss target
                     "FRAUDFLOW_MAX_INSTALL_LOSS": "0.25",
                     **env}
        return CliRunner().invoke(workflow, ["submit", *args], obj=self.settings,
                                  env=variables)

    def served(self) -> dict[str, object]:
        reply = requests.get(f"{self.predict_url}/models", headers=ADMIN, timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    def metrics(self) -> str:
        return (self.settings.var_dir / "metrics" / "workflow.prom").read_text()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          dolphinscheduler: DolphinScheduler) -> Iterator[Stack]:
    """An embedded store with the real sample and synthetic clicks in its lake, and a live
    predict server on that store and registry (no model yet)."""
    from serving import create_app

    root = tmp_path_factory.mktemp("ds-workflow")
    settings = settings_in(root).with_overrides(admin_token=ADMIN_TOKEN)
    write_lake(sample_clicks(), settings.lake_dir, "sample")
    write_lake(synthetic_clicks(20_000, seed=12), settings.lake_dir, "synthetic")
    app = create_app({"STORE_URL": settings.store_url, "DATABASE": settings.database,
                      "DEPLOYMENT": settings.deployment, "MODEL_DIR": str(settings.model_dir),
                      "ADMIN_TOKEN": ADMIN_TOKEN, "MODEL_POLL_INTERVAL": 0})
    predict = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=predict.serve_forever, daemon=True)
    thread.start()
    try:
        yield Stack(settings, f"http://127.0.0.1:{predict.server_port}", dolphinscheduler)
    finally:
        predict.shutdown()
        thread.join()


def _task_states(output: str) -> dict[str, str]:
    """The last state `--wait` printed for each task."""
    return {name: state for state, name in re.findall(r"^  ([A-Z_]+)\s+(\w+)$", output, re.M)}


def test_submitting_twice_updates_one_definition_with_its_schedule_online(
        stack: Stack) -> None:
    ds_settings = stack.ds.workflow_settings()
    definition = build_definition(stack.settings, ds_settings, Layout.under(stack.settings.var_dir))
    first = submit(definition, stack.settings, ds_settings)
    second = submit(definition, stack.settings, ds_settings)
    assert (second.workflow_code, second.task_codes, second.schedule_id) == \
        (first.workflow_code, first.task_codes, first.schedule_id)
    assert len(first.task_codes) == 10 and second.schedule_online
    with rest_session(ds_settings) as rest:
        project = project_code(rest, ds_settings.ds_project)
        definitions = rest.get(f"/projects/{project}/process-definition/list")
        assert [d["processDefinition"]["name"] for d in definitions] == ["fraudflow-retrain"]
        stored = definitions[0]["processDefinition"]
        assert stored["releaseState"] == "ONLINE" and stored["executionType"] == "SERIAL_WAIT"
        schedule = schedule_of(rest, project, first.workflow_code)
        assert (schedule["crontab"], schedule["timezoneId"], schedule["releaseState"]) == \
            ("0 0 2 * * ? *", "Asia/Shanghai", "ONLINE")
        tasks = {t["name"]: t for t in rest.get(
            f"/projects/{project}/process-definition/{first.workflow_code}")["taskDefinitionList"]}
    # the codes are the server's, by name; the embedded store's SQL runs as Shell tasks
    assert {name: t["code"] for name, t in tasks.items()} == first.task_codes
    assert tasks["extract"]["taskType"] == "SHELL"
    assert "fraudflow sql --mode offline" in tasks["extract"]["taskParams"]["rawScript"]
    switch = tasks["gate"]["taskParams"]["switchResult"]
    assert switch["dependTaskList"][0]["condition"] == '${gate} == "pass"'


def test_a_passing_candidate_is_deployed_and_published(stack: Stack) -> None:
    started = time.monotonic()
    result = stack.submit("--run", "--wait", "--window-end", WINDOW_END)
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    states = _task_states(result.output)
    assert {states[name] for name in ("create_table", "import", "extract", "train",
                                      "validate", "gate", "deploy", "load_online",
                                      "publish")} == {"SUCCESS"}
    assert "report" not in states  # the Switch chose deploy
    assert re.search(r"instance \d+ SUCCESS", result.output)
    production = Registry(stack.settings.model_dir).production()
    assert production is not None
    served = stack.served()
    assert served["current"]["version"] == production.version  # type: ignore[index]
    scored = requests.post(f"{stack.predict_url}/predict", json=SEED_EVENT, timeout=10).json()
    assert scored["model_version"] == production.version
    assert 'fraudflow_workflow_runs_total{outcome="published"} 1.0' in stack.metrics()
    print(f"\nDolphinScheduler run, pass branch: {took:.1f}s")


def test_a_rejected_candidate_is_reported_and_production_kept(stack: Stack) -> None:
    before = Registry(stack.settings.model_dir).production()
    assert before is not None, "runs after the passing test"
    result = stack.submit("--wait", "--window-end", WINDOW_END, FRAUDFLOW_AUC_FLOOR="0.999")
    assert result.exit_code == 0, result.output
    states = _task_states(result.output)
    assert states["validate"] == states["gate"] == states["report"] == "SUCCESS"
    assert not {"deploy", "load_online", "publish"} & set(states)
    after = Registry(stack.settings.model_dir).production()
    assert after is not None and after.version == before.version
    assert stack.served()["current"]["version"] == before.version  # type: ignore[index]
    work = stack.settings.var_dir.absolute() / "workflow" / "work" / WINDOW_END
    assert "0.999" in (work / "rejection.md").read_text()
    assert "fraudflow_workflow_candidate_rejected_total 1.0" in stack.metrics()


def test_a_failing_task_fails_the_instance_shows_its_log_and_counts(stack: Stack) -> None:
    # a window with no clicks: import finds nothing new, training has nothing to train on
    result = stack.submit("--wait", "--window-end", "2016010100")
    assert result.exit_code == 1, result.output
    states = _task_states(result.output)
    assert states["train"] == "FAILURE" and states["import"] == "SUCCESS"
    assert "validate" not in states
    assert re.search(r"instance \d+ FAILURE", result.output)
    log = result.output.split("--- task train FAILURE; its log: ---", 1)[1]
    assert "0 clicks in the window" in log  # the step's own error, from the worker's log
    assert "(failed tasks: train)" in result.output
    metrics = stack.metrics()
    assert 'fraudflow_workflow_runs_total{outcome="failed"} 1.0' in metrics
    # FraudflowRetrainingFailed: the last run ended after the last completed one
    values = {name: float(value) for name, value in re.findall(
        r"^(fraudflow_workflow_last_(?:run|success)_timestamp_seconds) (\S+)$", metrics, re.M)}
    assert values["fraudflow_workflow_last_run_timestamp_seconds"] > \
        values["fraudflow_workflow_last_success_timestamp_seconds"]


def test_gateway_errors_say_what_answered(stack: Stack, tmp_path: Path) -> None:
    nothing = stack.submit(PYDS_JAVA_GATEWAY_PORT=str(_closed_port()))
    assert "no DolphinScheduler Java gateway answers at 127.0.0.1:" in str(nothing.exception)
    # something answers on the port, but not a 3.1 gateway (here: the REST port)
    other = stack.submit(PYDS_JAVA_GATEWAY_PORT=str(stack.ds.info.ports.rest))
    assert "answered, but not as DolphinScheduler 3.1.x's" in str(other.exception)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])



def test_the_schedule_fires_with_the_window_of_its_fire_time(
        stack: Stack, tmp_path: Path) -> None:
    """Quartz in the server starts the run (every 10 s here), and `${window_end}` is the fire
    time's hour in Asia/Shanghai. A workflow of its own, on an empty lake: it fails at train,
    and with nobody following it, the failed task's script counts the failed run."""
    settings = settings_in(tmp_path)
    ds_settings = stack.ds.workflow_settings(ds_workflow="fraudflow-cron-test",
                                             cron="*/10 * * * * ? *")
    definition = build_definition(settings, ds_settings, Layout.under(settings.var_dir))
    submitted = submit(definition, settings, ds_settings)
    project = submitted.project_code
    with rest_session(ds_settings) as rest:
        try:
            deadline = time.monotonic() + 90
            while not (instances := rest.get(
                    f"/projects/{project}/process-instances",
                    processDefineCode=submitted.workflow_code, pageNo=1,
                    pageSize=10)["totalList"]):
                assert time.monotonic() < deadline, "the schedule did not fire in 90 s"
                time.sleep(1)
        finally:
            rest.post(f"/projects/{project}/schedules/{submitted.schedule_id}/offline")
        first = instances[-1]["id"]
        while (fired := rest.get(f"/projects/{project}/process-instances/{first}"))[
                "state"] not in FINAL_STATES:
            assert time.monotonic() < deadline + 120, "the scheduled run did not end"
            time.sleep(1)
    assert fired["commandType"] == "SCHEDULER"
    params = {p["prop"]: p["value"] for p in json.loads(fired["globalParams"])}
    # the REST API writes times in UTC; the window is named in UTC+8 wall-clock hours
    fire_utc = datetime.strptime(fired["scheduleTime"], "%Y-%m-%d %H:%M:%S")
    assert params["window_end"] == (fire_utc + timedelta(hours=8)).strftime("%Y%m%d%H")
    # nobody followed it: its failed task counted the failed run itself
    assert fired["state"] == "FAILURE"
    metrics = (settings.var_dir / "metrics" / "workflow.prom").read_text()
    assert re.search(r'^fraudflow_workflow_runs_total\{outcome="failed"\} [1-9]', metrics, re.M)
