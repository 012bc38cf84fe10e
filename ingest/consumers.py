"""Wiring of the two consumer processes: Kafka consumer + sink + run loop + signals."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from pathlib import Path

from prometheus_client import start_http_server

from core.config import Settings
from core.ports import check_port_free
from features.store import init_store
from ingest.archive import LakeSink
from ingest.kafka_io import BatchConsumer, BatchPolicy, DeadLetterProducer
from ingest.online import OnlineTableSink
from ingest.runner import RunStats, run
from ingest.writer_process import WriterProcessSink

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT finish the current batch, commit and leave the group."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    return stop


def _serve_metrics(port: int, how_to_change: str) -> None:
    if port:
        check_port_free(port, "metrics endpoint", how_to_change)
        start_http_server(port)
        log.info("metrics on :%d/metrics", port)


def online_sink(store_url: str, database: str, table: str, topic: str, group: str,
                bootstrap_servers: str) -> OnlineTableSink:
    return OnlineTableSink(store_url, database, table, topic, group,
                           DeadLetterProducer(bootstrap_servers, topic))


def ingest_sink(settings: Settings, topic: str, group: str) -> WriterProcessSink:
    """The ingest sink, writing in a writer process of its own."""
    return WriterProcessSink(functools.partial(
        online_sink, settings.store_url, settings.database, settings.table, topic, group,
        settings.kafka_bootstrap_servers), topic)


def run_ingest(settings: Settings, topic: str, group: str, policy: BatchPolicy,
               until_idle_s: float | None, metrics_port: int) -> RunStats:
    _serve_metrics(metrics_port, "--metrics-port or FRAUDFLOW_INGEST_METRICS_PORT (0 = off)")
    init_store(settings.store_url, settings.database, settings.table, settings.deployment)
    stop = _stop_on_signals()
    sink = ingest_sink(settings, topic, group)
    consumer = BatchConsumer(settings.kafka_bootstrap_servers, topic, group, policy,
                             resume_positions=sink.resume_positions, client_id="fraudflow-ingest")
    return run(consumer, sink, stop, until_idle_s)


def run_archive(settings: Settings, topic: str, group: str, lake_dir: Path, file_format: str,
                flush_seconds: float, until_idle_s: float | None,
                metrics_port: int) -> RunStats:
    _serve_metrics(metrics_port, "--metrics-port or FRAUDFLOW_ARCHIVE_METRICS_PORT (0 = off)")
    stop = _stop_on_signals()
    sink = LakeSink(lake_dir, topic, file_format, max_age_s=flush_seconds)
    consumer = BatchConsumer(settings.kafka_bootstrap_servers, topic, group,
                             BatchPolicy(5000, 0.5), resume_positions=sink.resume_positions,
                             before_revoke=sink.before_revoke, client_id="fraudflow-archive")
    return run(consumer, sink, stop, until_idle_s)
