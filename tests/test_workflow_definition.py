"""The workflow definition rendered to DolphinScheduler, checked offline; settings; submit."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from core.config import ConfigError, Settings, WorkflowSettings
from core.registry import sql_hash
from features.store import feature_sql, read_sql
from workflows.cli import workflow
from workflows.definition import GateTask, SqlTask, StepTask, build_definition
from workflows.dolphin import definition_json
from workflows.layout import Layout
from workflows.sql import deployment_name, training_select

CLUSTER = "openmldb:///demo_db?zk=zk-1:2181&zkPath=/openmldb-fraud"
EXPECTED_EDGES = {
    ("create_table", "import"), ("import", "extract"), ("extract", "train"),
    ("train", "validate"), ("validate", "gate"), ("gate", "deploy"), ("gate", "report"),
    ("deploy", "load_online"), ("load_online", "publish"),
}


def _settings(tmp_path: Path, store_url: str = CLUSTER) -> Settings:
    return Settings(store_url=store_url, var_dir=tmp_path / "var", lake_dir=tmp_path / "lake",
                    model_dir=tmp_path / "models")


def _rendered(tmp_path: Path) -> dict[str, Any]:
    settings = _settings(tmp_path)
    workflow_settings = WorkflowSettings()
    definition = build_definition(settings, workflow_settings, Layout.under(settings.var_dir))
    return definition_json(definition, settings, workflow_settings)


def test_tasks_render_to_openmldb_shell_and_switch_tasks(tmp_path: Path) -> None:
    tasks = {t["name"]: t for t in _rendered(tmp_path)["taskDefinitionJson"]}
    assert {name: t["taskType"] for name, t in tasks.items()} == {
        "create_table": "OPENMLDB", "import": "SHELL", "extract": "OPENMLDB",
        "train": "SHELL", "validate": "SHELL", "gate": "SWITCH", "deploy": "OPENMLDB",
        "load_online": "SHELL", "publish": "SHELL", "report": "SHELL"}
    for name in ("create_table", "extract", "deploy"):
        params = tasks[name]["taskParams"]
        assert (params["zk"], params["zkPath"]) == ("zk-1:2181", "/openmldb-fraud")
    assert tasks["extract"]["taskParams"]["executeMode"] == "offline"
    assert tasks["deploy"]["taskParams"]["executeMode"] == "online"


def test_sql_texts_are_the_deployment_sql(tmp_path: Path) -> None:
    tasks = {t["name"]: t["taskParams"] for t in _rendered(tmp_path)["taskDefinitionJson"]}
    deployment_file = read_sql("talkingdata_deployment.sql").strip()
    deploy = tasks["deploy"]["sql"]
    # the deployed SELECT is the file's text, byte for byte, under a name from its hash
    name = f"demo_{sql_hash(deployment_file)[:8]}"
    assert deploy == f"USE demo_db;\nDEPLOY IF NOT EXISTS {name} {deployment_file};"
    assert name == deployment_name(Settings())
    extract = tasks["extract"]["sql"]
    assert extract.startswith("USE demo_db;\nSET @@sync_job=true;\n")
    assert training_select("talkingdata").strip() in extract
    assert training_select("talkingdata").replace("    click_time,\n", "", 1) == feature_sql()
    assert extract.endswith(
        f"INTO OUTFILE '{tmp_path / 'var'}/workflow/work/${{window_end}}/features' "
        "OPTIONS(mode='overwrite', format='parquet');")
    assert "CREATE TABLE IF NOT EXISTS talkingdata" in tasks["create_table"]["sql"]


def test_edges_switch_branches_and_outputs(tmp_path: Path) -> None:
    rendered = _rendered(tmp_path)
    tasks = {t["name"]: t for t in rendered["taskDefinitionJson"]}
    names = {t["code"]: name for name, t in tasks.items()} | {0: None}
    edges = {(names[r["preTaskCode"]], names[r["postTaskCode"]])
             for r in rendered["taskRelationJson"]}
    assert edges == EXPECTED_EDGES | {(None, "create_table")}  # 0 → root, as DS wants
    switch = tasks["gate"]["taskParams"]["switchResult"]
    # DolphinScheduler quotes a VARCHAR parameter itself: `"${gate}"` would never match
    assert switch == {"dependTaskList": [{"condition": '${gate} == "pass"',
                                          "nextNode": tasks["deploy"]["code"]}],
                      "nextNode": tasks["report"]["code"]}
    validate = tasks["validate"]["taskParams"]
    assert validate["localParams"] == [
        {"prop": "gate", "direct": "OUT", "type": "VARCHAR", "value": ""}]
    assert validate["rawScript"].endswith(
        "fraudflow workflow step validate --window-end ${window_end} --emit-params")
    publish = tasks["publish"]["taskParams"]["rawScript"]
    assert f"export FRAUDFLOW_MODEL_DIR={tmp_path / 'models'}" in publish
    assert "FRAUDFLOW_ADMIN_TOKEN" not in publish  # secrets stay on the worker


def test_schedule_params_and_stable_codes(tmp_path: Path) -> None:
    rendered = _rendered(tmp_path)
    assert rendered["schedule"]["crontab"] == "0 0 2 * * ? *"
    assert rendered["schedule"]["timezoneId"] == "Asia/Shanghai"
    assert rendered["param"] == {"window_end": "$[yyyyMMddHH]"}
    assert rendered["executionType"] == "SERIAL_WAIT"
    assert (rendered["name"], rendered["project"]) == ("fraudflow-retrain", "fraudflow")
    again = _rendered(tmp_path)
    assert again["taskDefinitionJson"] == rendered["taskDefinitionJson"]
    assert again["taskRelationJson"] == rendered["taskRelationJson"]


def test_local_definition_has_the_same_dag(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    definition = build_definition(settings, WorkflowSettings(), Layout.under(settings.var_dir))
    assert set(definition.edges) == EXPECTED_EDGES
    kinds = {t.name: type(t) for t in definition.tasks}
    assert kinds["gate"] is GateTask and kinds["deploy"] is SqlTask
    assert kinds["publish"] is StepTask


def test_show_prints_json_without_a_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(workflow, ["show"], obj=_settings(tmp_path))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert len(shown["taskDefinitionJson"]) == 10


def test_an_embedded_store_runs_the_sql_as_shell_tasks(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "embedded://var/store")
    workflow_settings = WorkflowSettings()
    definition = build_definition(settings, workflow_settings, Layout.under(settings.var_dir))
    rendered = definition_json(definition, settings, workflow_settings)
    tasks = {t["name"]: t for t in rendered["taskDefinitionJson"]}
    assert {tasks[name]["taskType"] for name in ("create_table", "extract", "deploy")} == \
        {"SHELL"}
    script = tasks["extract"]["taskParams"]["rawScript"]
    # the worker runs in a directory of its own: the store's path is absolute
    assert f"export FRAUDFLOW_STORE_URL=embedded://{Path('var/store').absolute()}" in script
    command = script[script.index("\nfraudflow ") + 1:]
    assert command.startswith("fraudflow sql --mode offline 'USE demo_db;")
    sql = next(t for t in definition.tasks if t.name == "extract")
    assert isinstance(sql, SqlTask)
    assert shlex.split(command)[-1] == sql.sql  # the same text, quoted for the shell
    assert "${window_end}" in command  # DolphinScheduler fills it in before the shell runs
    assert "\nfraudflow sql --mode online 'USE demo_db;" in \
        tasks["deploy"]["taskParams"]["rawScript"]


def test_submit_fails_clearly_when_no_gateway_answers(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYDS_JAVA_GATEWAY_ADDRESS": "127.0.0.1",
           "PYDS_JAVA_GATEWAY_PORT": str(port), "FRAUDFLOW_STORE_URL": CLUSTER,
           "FRAUDFLOW_VAR_DIR": str(tmp_path / "var")}
    script = ("from fraudflow.cli import main\nfrom workflows.cli import commands\n"
              "for command in commands:\n    main.add_command(command)\n"
              "main(['workflow', 'submit'])")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"no DolphinScheduler Java gateway answers at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_from_env() -> None:
    settings = WorkflowSettings.from_env({
        "FRAUDFLOW_AUC_FLOOR": "0.8", "FRAUDFLOW_MAX_AUC_DROP": "0.005",
        "FRAUDFLOW_PREDICT_URLS": "http://a:8881, http://b:8881/update,",
        "FRAUDFLOW_WORKFLOW_CRON": "0 30 * ? * MON-FRI *", "FRAUDFLOW_TRAINING_HOURS": "48",
        "FRAUDFLOW_MAX_INSTALL_LOSS": "0.1", "FRAUDFLOW_MAX_BLOCKED_DROP": "0.05"})
    assert (settings.auc_floor, settings.max_auc_drop) == (0.8, 0.005)
    assert (settings.max_install_loss, settings.max_blocked_drop) == (0.1, 0.05)
    assert settings.predict_urls == ("http://a:8881", "http://b:8881/update")
    assert (settings.cron, settings.training_hours) == ("0 30 * ? * MON-FRI *", 48)
    assert WorkflowSettings.from_env({}) == WorkflowSettings()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("FRAUDFLOW_AUC_FLOOR", "1.5", "out of range"),
    ("FRAUDFLOW_MAX_INSTALL_LOSS", "0", "out of range"),
    ("FRAUDFLOW_MAX_INSTALL_LOSS", "1", "out of range"),
    ("FRAUDFLOW_MAX_PR_AUC_DROP", "-0.1", "out of range"),
    ("FRAUDFLOW_HOLDOUT_FRACTION", "0", "out of range"),
    ("FRAUDFLOW_TRAINING_HOURS", "many", "must be a number"),
    ("FRAUDFLOW_WORKFLOW_CRON", "0 2 * * *", "needs 7 fields"),
    ("FRAUDFLOW_WORKFLOW_CRON", "0 0 2 ? * 2-6 *", "by name"),
    ("FRAUDFLOW_WORKFLOW_CRON", "0 0 2 L * ? *", "Quartz-only"),
    ("FRAUDFLOW_WORKFLOW_CRON", "0 0 25 * * ? *", "not a valid cron"),
])
def test_bad_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        WorkflowSettings.from_env({name: value})
    assert name in str(raised.value)
