"""The local DolphinScheduler server's lifecycle (components/dolphinscheduler/server.py) and
`fraudflow dolphinscheduler start|stop|status`, against the session's real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from components.cli import dolphinscheduler as dolphinscheduler_cli
from components.dolphinscheduler import server
from components.dolphinscheduler.rest import DolphinSchedulerRest
from tests.fixtures_dolphinscheduler import DolphinScheduler

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.dolphinscheduler
def test_status_prints_the_rest_url_and_the_gateway_port(
        dolphinscheduler: DolphinScheduler) -> None:
    var_dir = dolphinscheduler.info.var_dir
    result = CliRunner().invoke(dolphinscheduler_cli, ["status", "--var-dir", str(var_dir)])
    assert result.exit_code == 0, result.output
    assert f"REST {dolphinscheduler.rest_url} " in result.output
    assert f"gateway 127.0.0.1:{dolphinscheduler.gateway_port} " in result.output
    assert f"pid {dolphinscheduler.info.pid}" in result.output
    health = requests.get(f"{dolphinscheduler.rest_url}/actuator/health", timeout=10).json()
    assert health["status"] == "UP"
    with DolphinSchedulerRest(dolphinscheduler.rest_url) as rest:  # a master and a worker
        assert rest.get("/monitor/masters") and rest.get("/monitor/workers")


@pytest.mark.dolphinscheduler
def test_starting_again_returns_the_running_server(dolphinscheduler: DolphinScheduler) -> None:
    again = server.start(dolphinscheduler.info.var_dir)
    assert again.already_running and again.pid == dolphinscheduler.info.pid
    assert again.ports == dolphinscheduler.info.ports
    conf = server.home_dir(dolphinscheduler.info.var_dir) / "conf"
    # the configuration the project wrote, with this server's ports
    assert f"port: {dolphinscheduler.info.ports.rest}" in (conf / "application.yaml").read_text()
    assert '<appender name="TASKLOGFILE"' in (conf / "logback-spring.xml").read_text()


def test_a_missing_schema_is_one_line_naming_it_and_its_source(tmp_path: Path) -> None:
    env = {**os.environ, "FRAUDFLOW_DS_SCHEMA": str(tmp_path / "nowhere.sql")}
    done = subprocess.run([sys.executable, "-m", "fraudflow", "dolphinscheduler", "start",
                           "--var-dir", str(tmp_path / "var")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: DolphinScheduler's H2 schema")
    assert str(tmp_path / "nowhere.sql") in lines[0] and "3.1.1 source release" in lines[0]
    assert not (tmp_path / "var" / "dolphinscheduler" / "server.pid").exists()


def test_status_and_stop_without_a_server(tmp_path: Path) -> None:
    status = CliRunner().invoke(dolphinscheduler_cli, ["status", "--var-dir", str(tmp_path)])
    assert status.exit_code == 1 and "not running" in status.output
    stop = CliRunner().invoke(dolphinscheduler_cli, ["stop", "--var-dir", str(tmp_path)])
    assert stop.exit_code == 0 and "was not running" in stop.output
