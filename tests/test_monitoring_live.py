"""The real Prometheus server scraping the real predict server, ingest and archive consumers and
workflow metrics under traffic, and running every dashboard panel's and every rule's PromQL.

Prometheus (Debian's package) scrapes and evaluates the rules every second, with the scrape
jobs and rule files of the compose stack (monitoring/config.py renders both configurations).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kafka import KafkaProducer
from kafka.admin import NewTopic

from core.events import click_events
from core.ports import free_port
from core.registry import OperatingPoint, Registry
from features.datagen import read_clicks
from ingest import producer
from monitoring.config import (
    ARCHIVE_JOB,
    INGEST_JOB,
    PREDICT_JOB,
    RULES_DIR,
    WORKFLOW_JOB,
    render_prometheus_config,
)
from monitoring.dashboards import DASHBOARDS, RATE_INTERVAL, dashboard_json, panel_queries
from tests.fixtures_kafka import KafkaBroker
from tests.serving_helpers import SAMPLE, ServingData, save_model, wait_until
from workflows import alerting
from workflows.layout import Layout

pytestmark = pytest.mark.kafka

# Grafana's $__rate_interval is at least four scrape intervals; 1 s scrapes here.
TEST_RATE_INTERVAL = "15s"
TRAFFIC_SECONDS = 40  # upper bound: traffic stops once every expected query has data
DEAD_LETTERS = 20
# Panels whose series only exist after a failure that a healthy run does not have.
EMPTY_WHEN_HEALTHY = {
    "fraudflow-ingestion: Write retries": "no store or broker error, so no retry",
}


@dataclass
class Stack:
    prometheus_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stop_traffic: threading.Event = field(default_factory=threading.Event)

    def query(self, promql: str) -> dict[str, Any]:
        response = requests.get(f"{self.prometheus_url}/api/v1/query",
                                params={"query": promql}, timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def series(self, promql: str) -> list[dict[str, Any]]:
        body = self.query(promql)
        assert body["status"] == "success", f"{promql}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def _fraudflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "fraudflow", *args]


def _new_topic(kafka: KafkaBroker) -> str:
    name = f"monitoring-{uuid.uuid4().hex[:12]}"
    admin = kafka.admin()
    try:
        admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])
        admin.wait_for_topics([name], timeout_ms=15000)
    finally:
        admin.close()
    return name


def _workflow_history(root: Path, serving_data: ServingData) -> tuple[Layout, Path]:
    """A registry with a production model and three recorded runs: published, rejected, and a
    failed last one (so the retraining-failed alert fires)."""
    models = root / "workflow-models"
    registry = Registry(models)
    # the collector reads the holdout metrics and creation time that training records
    registry.promote(registry.save(serving_data.model_a, {"metrics": {"auc": 0.91}}).version)
    layout = Layout.under(root / "workflow-var")
    alerting.record_outcome(layout, models, alerting.PUBLISHED, "w1/a", candidate_auc=0.91)
    alerting.record_outcome(layout, models, alerting.REJECTED, "w2/b", candidate_auc=0.84)
    alerting.record_outcome(layout, models, alerting.FAILED, "run-3")
    alerting.record_duration(layout, models, 12.5)
    return layout, models


def _send_clicks(kafka: KafkaBroker, topic: str, stop: threading.Event) -> None:
    """Valid clicks at a steady rate, and a few messages for the dead-letter topic."""
    bad = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    for _ in range(DEAD_LETTERS):
        bad.send(topic, value=b"not json at all")
    bad.flush()
    bad.close()
    rows = producer.synthetic_rows(1000 * TRAFFIC_SECONDS, seed=3)
    for chunk in rows:
        for start in range(0, len(chunk), 500):
            if stop.is_set():
                return
            producer.produce([chunk[start:start + 500]], kafka.bootstrap_servers, topic,
                             "monitoring-test", rate=1000, progress=False)


def _send_predictions(url: str, stop: threading.Event) -> None:
    events = click_events(read_clicks(SAMPLE).head(300))
    with requests.Session() as session:
        position = 0
        while not stop.is_set():
            batch = events[position:position + 5]
            position = (position + 5) % len(events)
            session.post(f"{url}/predict", json=batch[0], timeout=5)
            session.post(f"{url}/predict", json=batch, timeout=5)
            session.post(f"{url}/predict", data="{not json",
                         headers={"Content-Type": "application/json"}, timeout=5)
            time.sleep(0.02)


@pytest.fixture(scope="module")
def stack(kafka_broker: KafkaBroker, serving_data: ServingData,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found: apt-get install prometheus (.ci/run does)"
    root = tmp_path_factory.mktemp("monitoring")
    registry = Registry(root / "models")
    # baselines, so that the score-shift distance and the blocked-share gap are recorded
    registry.promote(save_model(registry, serving_data.model_a, score_cdf={
        "0.01": 0.9, "0.5": 0.99, "1.0": 1.0, "+Inf": 1.0},
        operating_point=OperatingPoint(0.05, 0.003, 1000, 40, 400, 2)).version)
    topic = _new_topic(kafka_broker)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
           "FRAUDFLOW_STORE_URL": f"embedded://{root / 'ingest-store'}",
           "FRAUDFLOW_LAKE_DIR": str(root / "lake"), "FRAUDFLOW_VAR_DIR": str(root / "var")}
    ports = {job: free_port() for job in (PREDICT_JOB, INGEST_JOB, ARCHIVE_JOB, WORKFLOW_JOB)}
    layout, workflow_models = _workflow_history(root, serving_data)
    # in this process: the collector renders the state file at each scrape, as under
    # `fraudflow scheduler`; its daemon thread ends with the test session
    alerting.serve(layout, workflow_models, ports[WORKFLOW_JOB])

    prometheus_port = free_port()
    config = root / "prometheus.yml"
    config.write_text(render_prometheus_config(
        {job: [f"127.0.0.1:{port}"] for job, port in ports.items()},
        sorted(RULES_DIR.glob("*.yml")), scrape_interval="1s", evaluation_interval="1s"))
    running = Stack(f"http://127.0.0.1:{prometheus_port}")
    traffic: list[threading.Thread] = []
    try:
        running.processes += [
            _start(_fraudflow("serve", "--host", "127.0.0.1", "--port", str(ports[PREDICT_JOB]),
                              "--workers", "1"),
                   {**env, "FRAUDFLOW_STORE_URL": serving_data.store_url,
                    "FRAUDFLOW_MODEL_DIR": str(registry.root)}, root / "predict.log"),
            _start(_fraudflow("ingest", "--topic", topic, "--metrics-port",
                              str(ports[INGEST_JOB])), env, root / "ingest.log"),
            _start(_fraudflow("archive", "--topic", topic, "--flush-seconds", "1",
                              "--metrics-port", str(ports[ARCHIVE_JOB])), env,
                   root / "archive.log"),
            _start([prometheus, f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
                   env, root / "prometheus.log"),
        ]
        predict_url = f"http://127.0.0.1:{ports[PREDICT_JOB]}"
        wait_until(lambda: requests.get(f"{predict_url}/readyz", timeout=2).ok, 60,
              "the predict server")
        traffic = [threading.Thread(target=_send_clicks,
                                    args=(kafka_broker, topic, running.stop_traffic)),
                   threading.Thread(target=_send_predictions,
                                    args=(predict_url, running.stop_traffic))]
        for thread in traffic:
            thread.start()
        wait_until(lambda: requests.get(f"{running.prometheus_url}/-/ready", timeout=2).ok, 30,
              "Prometheus")
        yield running
    finally:
        running.stop_traffic.set()
        for thread in traffic:
            thread.join(timeout=30)
        for process in running.processes:
            process.terminate()
        for process in running.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _panel_queries() -> list[tuple[str, str]]:
    """(dashboard: panel title, PromQL) with Grafana's rate interval filled in."""
    return [(f"{uid}: {title}", expr.replace(RATE_INTERVAL, TEST_RATE_INTERVAL))
            for uid in DASHBOARDS
            for title, expr in panel_queries(json.loads(dashboard_json(uid)))]


def _rules() -> list[dict[str, Any]]:
    return [rule for path in sorted(RULES_DIR.glob("*.yml"))
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def _metric_names(promql: str) -> set[str]:
    """Metric and recorded-series names a query reads (not label values, not functions)."""
    without_strings = re.sub(r'"[^"]*"', '""', promql)
    return set(re.findall(r"\b(fraudflow[_:][a-z0-9_:]+|up)\b(?!\s*\()", without_strings))


@pytest.fixture(scope="module")
def warmed_up(stack: Stack) -> Stack:
    """The stack once traffic has reached every metric a panel expects data from."""
    expected = [(title, expr) for title, expr in _panel_queries()
                if title not in EMPTY_WHEN_HEALTHY]
    try:
        wait_until(lambda: all(stack.series(expr) for _, expr in expected), TRAFFIC_SECONDS,
              "every panel to have data")
    except AssertionError:
        empty = [title for title, expr in expected if not stack.series(expr)]
        raise AssertionError(f"panels without data: {empty}") from None
    return stack


def test_every_target_is_scraped(stack: Stack) -> None:
    wait_until(lambda: len(stack.series("up == 1")) == 4, 30, "all four targets up")


def test_every_panel_query_returns_data(warmed_up: Stack) -> None:
    queries = _panel_queries()
    assert {title for title, _ in queries} >= set(EMPTY_WHEN_HEALTHY)
    for title, expr in queries:
        found = warmed_up.series(expr)  # asserts the query ran
        assert found or title in EMPTY_WHEN_HEALTHY, title
        for metric in _metric_names(expr):
            assert warmed_up.series(f"count({metric})") or title in EMPTY_WHEN_HEALTHY, \
                f"{title} reads {metric}: no such series"


def test_every_rule_evaluates_on_live_series(warmed_up: Stack) -> None:
    for rule in _rules():
        name = rule.get("record") or rule["alert"]
        body = warmed_up.query(rule["expr"])
        assert body["status"] == "success", f"{name}: {body}"
        if "record" in rule:
            assert body["data"]["result"], f"recording rule {name} has no data"
            assert warmed_up.series(rule["record"]), f"Prometheus did not record {name}"
        for metric in _metric_names(rule["expr"]):
            assert warmed_up.series(f"count({metric})"), f"{name} reads {metric}: no such series"
    rule_groups = requests.get(f"{warmed_up.prometheus_url}/api/v1/rules", timeout=10).json()
    for group in rule_groups["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule


def test_an_alert_fires_on_live_metrics(stack: Stack) -> None:
    """The recorded history ends in a failed run: Prometheus itself raises the alert."""
    def retraining_failed_fires() -> bool:
        alerts = requests.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()
        return any(alert["labels"]["alertname"] == "FraudflowRetrainingFailed"
                   and alert["state"] == "firing" for alert in alerts["data"]["alerts"])

    wait_until(retraining_failed_fires, 15, "FraudflowRetrainingFailed to fire")
