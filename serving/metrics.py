"""Every Prometheus metric of the predict server, and the request hooks that feed them.

Under gunicorn the server runs in prometheus-client's multiprocess mode: `fraudflow serve`
sets PROMETHEUS_MULTIPROC_DIR before any Python starts, so each worker writes its values to
that directory and `/metrics` merges them (see `exposition`). Gauges say in `multiprocess_mode`
how the workers' values combine. Without the variable (Flask's test client, `flask run`) the
metrics live in the process's default registry.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core.registry import SCORE_BUCKETS


def _remembered_pid() -> Callable[[], int]:
    """os.getpid without the system call: the pid is read once and again in every forked
    child, so it is always this process's own."""
    pid = os.getpid()

    def renew() -> None:
        nonlocal pid
        pid = os.getpid()

    os.register_at_fork(after_in_child=renew)
    return lambda: pid


# In multiprocess mode prometheus-client asks for the pid on every update, to notice a fork:
# ten system calls per /predict, which cost ~10 % of its CPU where system calls are dear
# (nested VMs). Its documented hook takes our pid function instead; set before any metric.
if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    values.ValueClass = values.MultiProcessValue(_remembered_pid())

NAMESPACE = "fraudflow"
# Sub-millisecond resolution: a prediction takes about a millisecond on the embedded store.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
# Attribution is rare (~0.25 % of clicks), so most scores sit near 0: resolve that end finely.

REQUESTS = Counter(
    "requests_total", "HTTP requests answered, by route and status code.",
    ["endpoint", "status"], namespace=NAMESPACE)
REQUEST_DURATION = Histogram(
    "request_duration_seconds", "Time to answer an HTTP request, by route.",
    ["endpoint"], buckets=LATENCY_BUCKETS, namespace=NAMESPACE)
INTERNAL_ERRORS = Counter(
    "internal_errors_total", "Requests that failed on an unexpected exception (a bug).",
    namespace=NAMESPACE)
FEATURE_FETCH_DURATION = Histogram(
    "feature_fetch_duration_seconds",
    "Time to fetch the request-mode features of one /predict request (all its events).",
    buckets=LATENCY_BUCKETS, namespace=NAMESPACE)
INFERENCE_DURATION = Histogram(
    "inference_duration_seconds", "Time to score one /predict request (all its events).",
    buckets=LATENCY_BUCKETS, namespace=NAMESPACE)
SCORES = Histogram(
    "score", "Scores given: the model's probability that a click is attributed.",
    buckets=SCORE_BUCKETS, namespace=NAMESPACE)
# By model version too: the share blocked (decision="fraud") per version is what the drift
# alert compares with the share that version blocked on its holdout.
DECISIONS = Counter(
    "decisions_total", "Scored events by decision and model version.", ["decision", "version"],
    namespace=NAMESPACE)
FEATURE_STORE_ERRORS = Counter(
    "feature_store_errors_total", "Feature-store calls that failed.", namespace=NAMESPACE)
MODEL_LOAD_FAILURES = Counter(
    "model_load_failures_total",
    "Models that could not be loaded or failed validation (the previous model kept serving).",
    namespace=NAMESPACE)
# One series per worker (liveall): 1 for the model it serves, 0 for models it served before,
# so a swap in progress shows as workers on different versions.
MODEL_INFO = Gauge(
    "model_info", "The model a worker serves (1) or served before (0).",
    ["version", "trained_at"], multiprocess_mode="liveall", namespace=NAMESPACE)
# livemin: the oldest model any live worker still serves, which is what a staleness alert needs.
MODEL_TRAINED_TIMESTAMP = Gauge(
    "model_trained_timestamp_seconds", "When the served model was trained (Unix time).",
    multiprocess_mode="livemin", namespace=NAMESPACE)
# The served model's holdout scores as SCORES counts them: the fraction <= each bound `le`
# (training stores it in the model's metadata). The score-shift alert compares live scores with
# it. livemostrecent: the latest swap wins, so while the workers of a server catch up with the
# registry the gauge already shows the model they are converging to, never a pointwise mix of
# two models' CDFs (as max or min would); dead workers drop out as for the gauges above.
# A model version's threshold and its expected blocked share never change, so the workers'
# values agree and old versions' series may stay: livemax.
DECISION_THRESHOLD = Gauge(
    "model_decision_threshold",
    "The score below which a model version's clicks are called fraud (blocked).",
    ["version"], multiprocess_mode="livemax", namespace=NAMESPACE)
EXPECTED_BLOCKED_SHARE = Gauge(
    "model_expected_blocked_share",
    "Share of its holdout's clicks a model version blocked at its operating point (absent "
    "when it decides at an override or the default threshold).",
    ["version"], multiprocess_mode="livemax", namespace=NAMESPACE)
BASELINE_SCORE_CDF_NAME = "model_baseline_score_cdf"
BASELINE_SCORE_CDF = Gauge(
    BASELINE_SCORE_CDF_NAME,
    "Fraction of the served model's holdout scores <= le (absent: the model has no baseline).",
    ["le"], multiprocess_mode="livemostrecent", namespace=NAMESPACE)


def init_app(app: Flask) -> None:
    """Count and time every request by its route (not its raw path, which clients choose).
    Call it before registering other hooks, so the timer starts first."""
    app.before_request(_start_timer)
    app.after_request(_record_request)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _record_request(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    answered, duration = _request_series(endpoint, response.status_code)
    answered.inc()
    duration.observe(time.perf_counter() - g.request_started)
    return response


@lru_cache(maxsize=256)  # routes × statuses: a few dozen series
def _request_series(endpoint: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter and duration series of a route and status, looked up once
    (`labels()` costs about as much as the update itself)."""
    return (REQUESTS.labels(endpoint=endpoint, status=str(status)),
            REQUEST_DURATION.labels(endpoint=endpoint))


def export_baseline_score_cdf(cdf: Mapping[str, float], replaced: Mapping[str, float]) -> None:
    """Export the swapped-in model's baseline score CDF (empty: it has none), withdrawing the
    bounds of the replaced model's that it lacks."""
    if _multiprocess():
        # Removal is not implemented in multiprocess mode: the worker's file keeps every
        # series it ever set. NaN stands for "no baseline", and `exposition` drops it.
        for le in replaced.keys() - cdf.keys():
            BASELINE_SCORE_CDF.labels(le).set(math.nan)
    else:  # one process serves one model: its baseline replaces whatever was there
        BASELINE_SCORE_CDF.clear()
    for le, fraction in cdf.items():
        BASELINE_SCORE_CDF.labels(le).set(fraction)


@lru_cache(maxsize=64)
def decision_counters(version: str) -> tuple[Counter, Counter]:
    """The (fraud, ok) decision counters of a model version, looked up once per version."""
    return DECISIONS.labels(decision="fraud", version=version), \
        DECISIONS.labels(decision="ok", version=version)


def export_decision_baseline(version: str, threshold: float,
                             expected_blocked_share: float | None) -> None:
    """Export what a swapped-in model decides at, and start its decision counters at 0 (so a
    rate over them exists from its first decision on)."""
    decision_counters(version)
    DECISION_THRESHOLD.labels(version).set(threshold)
    if expected_blocked_share is not None:
        EXPECTED_BLOCKED_SHARE.labels(version).set(expected_blocked_share)


class _WithoutUnsetBaselines(Collector):
    """The workers' merged metrics, less the NaN baseline samples that mean "no baseline"."""

    def __init__(self, merged: Collector) -> None:
        self._merged = merged

    def collect(self) -> Iterable[Metric]:
        for metric in self._merged.collect():
            if metric.name == f"{NAMESPACE}_{BASELINE_SCORE_CDF_NAME}":
                metric.samples = [s for s in metric.samples if not math.isnan(s.value)]
            yield metric


def _multiprocess() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type: every worker's values merged under gunicorn."""
    if _multiprocess():
        merged = multiprocess.MultiProcessCollector(registry=None)
        return generate_latest(_WithoutUnsetBaselines(merged)), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
