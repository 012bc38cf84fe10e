"""The Prometheus configuration and rules, checked by promtool (Debian's `prometheus` package):
syntax, and a unit test (monitoring/tests/*.yml) for every alert."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.config import (
    COMPOSE_TARGETS,
    PROMETHEUS_CONFIG,
    RULES_DIR,
    compose_prometheus_config,
    render_prometheus_config,
)

UNIT_TESTS_DIR = RULES_DIR.parent / "tests"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: apt-get install prometheus (.ci/run does)"
    return found


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def _rules(kind: str) -> list[dict[str, object]]:
    return [rule for path in rule_files()
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


def test_checked_in_config_is_the_generated_one() -> None:
    assert PROMETHEUS_CONFIG.read_text() == compose_prometheus_config(), \
        "run `python -m monitoring build`"


def test_configs_pass_promtool(promtool: str, tmp_path: Path) -> None:
    # The compose config's rule paths exist only in its container: check its syntax there,
    # and the same jobs with the real rule files in full.
    _run(promtool, "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    local = tmp_path / "prometheus.yml"
    local.write_text(render_prometheus_config(
        {job: [f"localhost:{9200 + i}"] for i, job in enumerate(COMPOSE_TARGETS)},
        rule_files()))
    output = _run(promtool, "check", "config", str(local))
    assert f"SUCCESS: {len(rule_files())} rule files found" in output


def test_rules_pass_promtool(promtool: str) -> None:
    output = _run(promtool, "check", "rules", *map(str, rule_files()))
    assert output.count("SUCCESS") == len(rule_files())


def test_rule_unit_tests_pass(promtool: str) -> None:
    tests = sorted(UNIT_TESTS_DIR.glob("*.yml"))
    output = _run(promtool, "test", "rules", *map(str, tests))
    assert output.count("SUCCESS") == len(tests), output


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = {str(rule["alert"]) for rule in _rules("alert")}
    fired: set[str] = set()
    for path in UNIT_TESTS_DIR.glob("*.yml"):
        unit = yaml.safe_load(path.read_text())
        # every rule file, so that each test sees the rules as Prometheus loads them
        assert sorted(unit["rule_files"]) == sorted(f"../rules/{p.name}" for p in rule_files())
        for case in unit["tests"]:
            fired |= {check["alertname"] for check in case.get("alert_rule_test", [])
                      if check.get("exp_alerts")}
    assert alerts - fired == set(), "alerts without a test that makes them fire"
    assert fired - alerts == set(), "tests of alerts that do not exist"


def test_alerts_say_how_bad_and_what_happened() -> None:
    for rule in _rules("alert"):
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels.get("severity") in {"critical", "warning"}, rule["alert"]
        assert annotations.get("summary"), rule["alert"]
