"""The Grafana dashboards (Serving, Ingestion, Training), built as code with
grafana-foundation-sdk and written as JSON into monitoring/grafana/dashboards/.

Panels query the recording rules of monitoring/rules where one exists, so a panel shows the
very number its alert fires on. `python -m monitoring build` regenerates the JSON; a test
checks the committed files are what this module builds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row, ThresholdsConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
)

from monitoring.config import MONITORING_DIR

DASHBOARDS_DIR = MONITORING_DIR / "grafana" / "dashboards"
# The uid the provisioned datasource has (grafana/provisioning/datasources/prometheus.yml).
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
RATE_INTERVAL = "$__rate_interval"
PANEL_WIDTH = 8
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Graph:
    """One panel: a time series, or a stat showing the latest value of each series."""

    title: str
    description: str
    queries: Sequence[Query]
    unit: str = "short"
    # Where the value turns bad (an alert's threshold), drawn as a dashed line or a red stat.
    alert_threshold: float | None = None
    kind: str = "timeseries"


@dataclass(frozen=True)
class Section:
    title: str
    graphs: Sequence[Graph] = field(default_factory=tuple)


def rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({metric}[{RATE_INTERVAL}]))"


def quantile(q: float, histogram: str, by: str = "", selector: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return (f"histogram_quantile({q}, sum by ({labels}) "
            f"(rate({histogram}_bucket{selector}[{RATE_INTERVAL}])))")


SERVING = [
    Section("Traffic and errors", [
        Graph("Requests by endpoint and status",
              "Every HTTP answer of the predict servers, per second.",
              [Query(rate("fraudflow_requests_total", "endpoint, status"),
                     "{{endpoint}} {{status}}")], unit="reqps"),
        Graph("/predict 5xx ratio",
              "Share of /predict answers that are 5xx (alert above 1 %). Bad input is 4xx.",
              [Query("fraudflow:predict_5xx:ratio_rate5m", "5xx ratio")],
              unit="percentunit", alert_threshold=0.01),
        Graph("Failures by cause",
              "Unexpected exceptions (bugs), feature-store calls that failed, models that "
              "could not be loaded (the previous one kept serving).",
              [Query(rate("fraudflow_internal_errors_total"), "internal errors"),
               Query(rate("fraudflow_feature_store_errors_total"), "feature store errors"),
               Query(rate("fraudflow_model_load_failures_total"), "model load failures")],
              unit="ops"),
    ]),
    Section("Latency", [
        Graph("/predict latency",
              "p50 and p99 over 5 minutes; the SLO is p99 within 50 ms.",
              [Query("fraudflow:predict_latency_seconds:p50_5m", "p50"),
               Query("fraudflow:predict_latency_seconds:p99_5m", "p99")],
              unit="s", alert_threshold=0.05),
        Graph("Where /predict spends its time (p99)",
              "Fetching request-mode features vs scoring them, per request.",
              [Query(quantile(0.99, "fraudflow_feature_fetch_duration_seconds"),
                     "feature fetch"),
               Query(quantile(0.99, "fraudflow_inference_duration_seconds"), "inference")],
              unit="s"),
        Graph("Scored events by decision", "Events scored per second, by decision.",
              [Query(rate("fraudflow_decisions_total", "decision"), "{{decision}}")],
              unit="ops"),
    ]),
    Section("Decisions", [
        Graph("Blocked share by model version",
              "Share of each model version's clicks called fraud over the last hour, and the "
              "share it blocked on its training holdout at the same threshold (absent when "
              "it decides at an override or the default).",
              [Query("fraudflow:blocked_share:ratio_rate1h", "{{version}} live (1h)"),
               Query("max by (version) (fraudflow_model_expected_blocked_share)",
                     "{{version}} on its holdout")],
              unit="percentunit"),
        Graph("Blocked share gap to the holdout",
              "Live blocked share minus the holdout's, per model version; the alert fires "
              "beyond ±0.1 with over 1000 decisions an hour.",
              [Query("fraudflow:blocked_share_gap:1h_vs_expected", "{{version}}")],
              unit="percentunit", alert_threshold=0.1),
        Graph("Decision threshold by model version",
              "The score below which a click is called fraud: the model's operating point "
              "from training, an override (FRAUDFLOW_PREDICT_THRESHOLD) or the default.",
              [Query("max by (version) (fraudflow_model_decision_threshold)", "{{version}}")],
              kind="stat"),
    ]),
    Section("Scores and model", [
        Graph("Score quantiles",
              "The model's probability that a click is attributed; most are near 0.",
              [Query(quantile(q, "fraudflow_score"), f"p{round(q * 100)}")
               for q in (0.5, 0.9, 0.99)]),
        Graph("Score distribution shift",
              "Largest gap between the last hour's score CDF and the served model's holdout "
              "CDF (a Kolmogorov-Smirnov distance on the histogram buckets); alert above 0.1. "
              "Empty while the model has no baseline.",
              [Query("fraudflow:score_cdf_distance:max_1h_vs_baseline", "max CDF gap")],
              alert_threshold=0.1),
        Graph("Workers per model version",
              "Which model each gunicorn worker serves: two versions at once is a swap in "
              "progress.",
              [Query("count by (version) (fraudflow_model_info == 1)", "{{version}}")]),
        Graph("Served model age", "Since the oldest model any worker serves was trained.",
              [Query("fraudflow:served_model_age_seconds", "age")],
              unit="s", alert_threshold=2 * 86400, kind="stat"),
    ]),
]

INGESTION = [
    Section("Throughput", [
        Graph("Messages consumed", "Messages read from Kafka per second.",
              [Query(rate("fraudflow_consumer_messages_total", "consumer, topic"),
                     "{{consumer}} {{topic}}")], unit="ops"),
        Graph("Events written",
              "Events durably written: online table (ingest), lake files (archive).",
              [Query(rate("fraudflow_consumer_rows_written_total", "consumer"),
                     "{{consumer}}")], unit="ops"),
        Graph("Batch size (p50)", "Messages per written batch.",
              [Query(quantile(0.5, "fraudflow_consumer_batch_size", "consumer"),
                     "{{consumer}} batch size")]),
        Graph("Batch write time (p99)", "Time to durably write one batch and its offsets.",
              [Query(quantile(0.99, "fraudflow_consumer_write_duration_seconds", "consumer"),
                     "{{consumer}}")], unit="s"),
    ]),
    Section("Lag and freshness", [
        Graph("Consumer lag", "Messages behind the partition ends, per consumer group.",
              [Query("fraudflow:consumer_lag_messages:sum", "{{consumer}} {{topic}}")]),
        Graph("Lag by partition", "Where the lag is: one partition or all of them.",
              [Query("max by (consumer, partition) (fraudflow_consumer_lag_messages)",
                     "{{consumer}} p{{partition}}")]),
        Graph("Produce to online table (p99)",
              "From the Kafka record timestamp to the durable write; the goal is 200 ms.",
              [Query("fraudflow:consumer_produce_to_write_seconds:p99_5m", "{{consumer}}")],
              unit="s", alert_threshold=0.2),
        Graph("Event time behind the clock",
              "How old the newest written click is; alert above 15 minutes. A replay of "
              "old data shows its age here.",
              [Query("fraudflow:consumer_event_time_lag_seconds", "{{consumer}}")],
              unit="s", alert_threshold=900),
        Graph("Since the last write", "Wall-clock time since each consumer last wrote.",
              [Query("time() - max by (consumer) "
                     "(fraudflow_consumer_last_write_timestamp_seconds)", "{{consumer}}")],
              unit="s", kind="stat"),
    ]),
    Section("Bad input and retries", [
        Graph("Dead-letter ratio", "Share of ingested messages sent to <topic>.dlq.",
              [Query("fraudflow:consumer_dead_letter:ratio_rate5m", "{{topic}}")],
              unit="percentunit", alert_threshold=0.01),
        Graph("Invalid events by reason", "Messages that are not valid click events.",
              [Query(rate("fraudflow_consumer_invalid_events_total", "consumer, reason"),
                     "{{consumer}} {{reason}}")], unit="ops"),
        Graph("Write retries", "Batch writes retried after a store or broker error.",
              [Query(rate("fraudflow_consumer_write_retries_total", "consumer"),
                     "{{consumer}}")], unit="ops"),
        Graph("Consumers up", "Consumer processes Prometheus scrapes, per job.",
              [Query('sum by (job) (up{job=~"ingest|archive"})', "{{job}}")], kind="stat"),
    ]),
]

TRAINING = [
    Section("Runs", [
        Graph("Since the last completed run",
              "Published or rejected; runs are daily, the alert is at 26 hours.",
              [Query("time() - fraudflow_workflow_last_success_timestamp_seconds", "age")],
              unit="s", alert_threshold=26 * 3600, kind="stat"),
        Graph("Runs by outcome", "Runs that ended in the last day, by outcome.",
              [Query("sum by (outcome) (increase(fraudflow_workflow_runs_total[1d]))",
                     "{{outcome}}")]),
        Graph("Candidates rejected (7 days)", "Candidates the gate turned down.",
              [Query("sum(increase(fraudflow_workflow_candidate_rejected_total[7d]))",
                     "rejected")], kind="stat"),
        Graph("Last run duration", "Wall time of the last local run.",
              [Query("fraudflow_workflow_run_duration_seconds", "duration")],
              unit="s", kind="stat"),
    ]),
    Section("Models", [
        Graph("Holdout AUC: candidate vs production",
              "The last candidate that reached the gate, and the production model when it "
              "was trained.",
              [Query("fraudflow_workflow_candidate_auc", "candidate"),
               Query("fraudflow_workflow_production_auc", "production")]),
        Graph("Production model age", "Since the registry's production model was trained.",
              [Query("time() - fraudflow_workflow_production_model_trained_timestamp_seconds",
                     "registry")],
              unit="s", alert_threshold=2 * 86400, kind="stat"),
        Graph("Model age per predict server",
              "What each server actually serves: it lags the registry until it reloads.",
              [Query("time() - fraudflow_model_trained_timestamp_seconds", "{{instance}}")],
              unit="s"),
    ]),
]

DASHBOARDS: dict[str, tuple[str, list[Section]]] = {
    "fraudflow-serving": ("FraudFlow / Serving", SERVING),
    "fraudflow-ingestion": ("FraudFlow / Ingestion", INGESTION),
    "fraudflow-training": ("FraudFlow / Training", TRAINING),
}


def _thresholds(alert_threshold: float | None) -> ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    if alert_threshold is not None:
        steps.append(Threshold(value=alert_threshold, color="red"))
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _panel(graph: Graph, panel_id: int) -> timeseries.Panel | stat.Panel:
    panel: timeseries.Panel | stat.Panel
    if graph.kind == "stat":
        panel = stat.Panel().reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    else:
        panel = timeseries.Panel().legend(
            common_builders.VizLegendOptions().show_legend(True)
            .display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM))
        if graph.alert_threshold is not None:
            panel.thresholds_style(common_builders.GraphThresholdsStyleConfig()
                                   .mode(GraphTresholdsStyleMode.DASHED))
    panel.id(panel_id).title(graph.title).description(graph.description) \
        .datasource(DATASOURCE).unit(graph.unit).thresholds(_thresholds(graph.alert_threshold)) \
        .span(PANEL_WIDTH).height(PANEL_HEIGHT)
    for ref, query in zip("ABCDEFGH", graph.queries, strict=False):
        panel.with_target(prometheus.Dataquery().ref_id(ref).expr(query.expr)
                          .legend_format(query.legend or "__auto").datasource(DATASOURCE))
    return panel


def build_dashboard(uid: str, title: str, sections: Sequence[Section]) -> Dashboard:
    dashboard = Dashboard(title).uid(uid).tags(["fraudflow"]).refresh("30s") \
        .time("now-6h", "now").timezone("browser").readonly()
    panel_id = 1
    for section in sections:
        dashboard.with_row(Row(section.title).id(panel_id))
        panel_id += 1
        for graph in section.graphs:
            dashboard.with_panel(_panel(graph, panel_id))
            panel_id += 1
    return dashboard


def dashboard_json(uid: str) -> str:
    title, sections = DASHBOARDS[uid]
    built = build_dashboard(uid, title, sections).build()
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_dashboards(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for uid in DASHBOARDS:
        path = directory / f"{uid}.json"
        path.write_text(dashboard_json(uid))
        written.append(path)
    return written


def panel_queries(dashboard: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard's JSON."""
    found = []
    panels = dashboard.get("panels")
    assert isinstance(panels, list)
    for panel in panels:
        for target in panel.get("targets") or []:
            found.append((panel["title"], target["expr"]))
    return found
