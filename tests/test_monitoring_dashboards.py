"""The Grafana dashboards and provisioning: generated from monitoring/dashboards.py, committed
as JSON, wired to the provisioned datasource, and using every recording rule."""

from __future__ import annotations

import json
import re

import yaml

from monitoring.config import MONITORING_DIR, RULES_DIR
from monitoring.dashboards import DASHBOARDS, DASHBOARDS_DIR, dashboard_json, panel_queries

PROVISIONING = MONITORING_DIR / "grafana" / "provisioning"


def test_committed_dashboards_are_the_generated_ones() -> None:
    committed = {path.stem for path in DASHBOARDS_DIR.glob("*.json")}
    assert committed == set(DASHBOARDS), "run `python -m monitoring build`"
    for uid in DASHBOARDS:
        assert (DASHBOARDS_DIR / f"{uid}.json").read_text() == dashboard_json(uid), \
            f"{uid}.json is stale: run `python -m monitoring build`"


def test_panels_use_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    for name in DASHBOARDS:
        dashboard = json.loads(dashboard_json(name))
        assert dashboard["uid"] == name
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels
        for panel in panels:
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(target["datasource"]["uid"] == uid for target in panel["targets"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_provider_reads_where_compose_mounts_the_json() -> None:
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "fraudflow.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((MONITORING_DIR.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{path}:ro" in mounts


def test_every_recording_rule_is_used_by_an_alert_a_panel_or_another_rule() -> None:
    rules = [rule for path in RULES_DIR.glob("*.yml")
             for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]
    panel_exprs = [expr for name in DASHBOARDS
                   for _, expr in panel_queries(json.loads(dashboard_json(name)))]
    for rule in rules:
        if "record" in rule:
            readers = [other["expr"] for other in rules if other is not rule] + panel_exprs
            used = re.compile(re.escape(rule["record"]) + r"(?![a-z0-9_:])")
            assert any(used.search(expr) for expr in readers), f"{rule['record']} is unused"
