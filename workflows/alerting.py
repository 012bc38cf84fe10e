"""The workflow's Prometheus metrics, for alerting on stale, failing or rejected retraining.

Runs are separate processes (a DolphinScheduler task, `fraudflow workflow run`), so the
numbers live in a small state file that each run updates; one collector renders it, plus the
registry's production model, both into `var/metrics/workflow.prom` (for node_exporter's
textfile collector) and on the `fraudflow scheduler` HTTP port.

Alert on: time() - last_success_timestamp_seconds (no completed run), increase of
runs_total{outcome="failed"} or candidate_rejected_total, production_model_trained age.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.exceptions import RegistryError
from core.ports import check_port_free
from core.registry import Registry
from workflows.layout import Layout, exclusive_lock, write_json

PREFIX = "fraudflow_workflow_"
PUBLISHED = "published"
REJECTED = "rejected"
FAILED = "failed"
OUTCOMES = (PUBLISHED, REJECTED, FAILED)
_REMEMBERED = 100  # recorded keys kept to recognise a re-run


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def record_outcome(layout: Layout, model_dir: Path, outcome: str, key: str,
                   candidate_auc: float | None = None) -> None:
    """Count a run that ended `outcome` (published and rejected runs completed); `key` names
    what ended (window, candidate): re-running the step that records it counts it once."""
    now = time.time()
    with exclusive_lock(layout.metrics_state.with_suffix(".lock"), "metrics update", wait=True):
        state = _read_state(layout.metrics_state)
        recorded = state.setdefault("recorded", [])
        if f"{outcome}:{key}" in recorded:
            return
        state["recorded"] = [*recorded, f"{outcome}:{key}"][-_REMEMBERED:]
        runs = state.setdefault("runs", {})
        runs[outcome] = runs.get(outcome, 0) + 1
        state["last_run"] = now
        if outcome != FAILED:
            state["last_success"] = now
            state["candidate_auc"] = candidate_auc
        if outcome == REJECTED:
            state["candidate_rejected"] = state.get("candidate_rejected", 0) + 1
        write_json(layout.metrics_state, state)
    write_textfile(layout, model_dir)


def record_duration(layout: Layout, model_dir: Path, seconds: float) -> None:
    with exclusive_lock(layout.metrics_state.with_suffix(".lock"), "metrics update", wait=True):
        state = _read_state(layout.metrics_state)
        state["run_duration"] = seconds
        write_json(layout.metrics_state, state)
    write_textfile(layout, model_dir)


class WorkflowCollector(Collector):
    """Renders the state file and the production model at each scrape."""

    def __init__(self, layout: Layout, model_dir: Path) -> None:
        self.layout = layout
        self.model_dir = model_dir

    def collect(self) -> Iterator[Metric]:
        state = _read_state(self.layout.metrics_state)
        gauges = {
            "last_run_timestamp_seconds": ("When the last run ended.", state.get("last_run")),
            "last_success_timestamp_seconds": (
                "When the last run completed (published or rejected).",
                state.get("last_success")),
            "run_duration_seconds": ("Wall time of the last local run.",
                                     state.get("run_duration")),
            "candidate_auc": ("Holdout AUC of the last candidate that reached the gate.",
                              state.get("candidate_auc")),
        }
        gauges.update(self._production())
        for name, (doc, value) in gauges.items():
            if value is not None:
                yield GaugeMetricFamily(PREFIX + name, doc, value=float(value))
        rejected = CounterMetricFamily(PREFIX + "candidate_rejected",
                                       "Candidates the gate rejected.")
        rejected.add_metric([], state.get("candidate_rejected", 0))
        yield rejected
        runs = CounterMetricFamily(PREFIX + "runs", "Workflow runs by outcome.",
                                   labels=["outcome"])
        for outcome in OUTCOMES:
            runs.add_metric([outcome], state.get("runs", {}).get(outcome, 0))
        yield runs

    def _production(self) -> dict[str, tuple[str, float | None]]:
        try:
            production = Registry(self.model_dir).production()
            metadata = production.metadata if production else None
        except RegistryError:
            metadata = None  # a broken pointer must not break the scrape; the gauges vanish
        if metadata is None:
            return {}
        created = metadata.get("created_at")
        return {
            "production_auc": ("Holdout AUC of the production model when it was trained.",
                               metadata.get("metrics", {}).get("auc")),
            "production_model_trained_timestamp_seconds": (
                "When the production model was trained.",
                datetime.fromisoformat(created).timestamp() if created else None),
        }


def _registry(layout: Layout, model_dir: Path) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkflowCollector(layout, model_dir))
    return registry


def write_textfile(layout: Layout, model_dir: Path) -> Path:
    layout.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(layout.metrics_file), _registry(layout, model_dir))  # atomic
    return layout.metrics_file


def serve(layout: Layout, model_dir: Path, port: int) -> None:
    """Expose the metrics on `port` from a daemon thread."""
    check_port_free(port, "scheduler metrics endpoint",
                    "--metrics-port or FRAUDFLOW_WORKFLOW_METRICS_PORT (0 = off)")
    start_http_server(port, registry=_registry(layout, model_dir))
