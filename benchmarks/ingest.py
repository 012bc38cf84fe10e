"""Ingest benchmarks against a real broker, each beside a floor measured in the same run.

- throughput: `fraudflow ingest`'s loop (decode, validate, durable write + offsets, commit)
  vs a raw kafka-python consume loop over the same topic;
- freshness: produce → durably written (queryable in request mode) at a steady rate.
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord

from components.kafka import broker
from core.ports import free_port
from features.store import init_store
from ingest import producer
from ingest.consumers import online_sink
from ingest.kafka_io import BatchConsumer, BatchPolicy, Positions
from ingest.runner import run
from ingest.writer_process import WriterProcessSink


class _TimedSink(WriterProcessSink):
    """`fraudflow ingest`'s sink, recording when each batch became durable and each event's
    produce→write latency."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_write_started: float | None = None
        self.first_write_done: float | None = None  # epoch seconds
        self.last_write_done = 0.0
        self.written = 0
        self.produced_ms: list[int] = []
        self.latencies: list[float] = []  # seconds, in the order of produced_ms

    def process(self, records: list[ConsumerRecord]) -> Positions:
        if self.first_write_started is None:
            self.first_write_started = time.perf_counter()
        positions = super().process(records)
        done = time.time()
        if self.first_write_done is None:
            self.first_write_done = done
        self.last_write_done = time.perf_counter()
        self.written += len(records)
        self.produced_ms.extend(r.timestamp for r in records)
        self.latencies.extend(done - r.timestamp / 1000 for r in records)
        return positions


def _topic(bootstrap: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])
    admin.wait_for_topics([name], timeout_ms=15000)
    admin.close()
    return name


def _raw_consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_poll_records=5000)
    seen = 0
    started: float | None = None
    while seen < count:
        batch = consumer.poll(timeout_ms=1000, max_records=5000)
        if batch and started is None:
            started = time.perf_counter()
        seen += sum(len(records) for records in batch.values())
    seconds = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return seconds


@dataclass(frozen=True)
class _IngestRun:
    sink: _TimedSink
    thread: threading.Thread
    stop: threading.Event


def _start_ingest(bootstrap: str, topic: str, store_url: str, count: int,
                  policy: BatchPolicy) -> _IngestRun:
    """`fraudflow ingest`'s sink, consumer and run loop on a thread, until `count` written
    (or `stop` set)."""
    init_store(store_url, "demo_db", "talkingdata", "demo")
    group = f"ingest-{topic}"
    sink = _TimedSink(functools.partial(online_sink, store_url, "demo_db", "talkingdata", topic,
                                        group, bootstrap), topic)
    consumer = BatchConsumer(bootstrap, topic, group, policy,
                             resume_positions=sink.resume_positions)
    stop = threading.Event()

    def run_until_written() -> None:
        def stop_when_done() -> None:
            while sink.written < count and not stop.wait(0.05):
                pass
            stop.set()

        watcher = threading.Thread(target=stop_when_done, daemon=True)
        watcher.start()
        run(consumer, sink, stop)
        watcher.join()

    thread = threading.Thread(target=run_until_written, name="bench-ingest")
    thread.start()
    return _IngestRun(sink, thread, stop)


def bench_throughput(bootstrap: str, work: Path, count: int,
                     batch: int = 20_000) -> dict[str, Any]:
    topic = _topic(bootstrap)
    stats = producer.produce(producer.synthetic_rows(count, seed=5), bootstrap, topic, "bench",
                             progress=False)
    raw_s = _raw_consume(bootstrap, topic, count)
    ingest = _start_ingest(bootstrap, topic, f"embedded://{work / 'store-throughput'}", count,
                           BatchPolicy(max_records=batch, max_latency_s=0.1))
    ingest.thread.join()
    sink = ingest.sink
    ingest_s = sink.last_write_done - (sink.first_write_started or 0)
    return {"events": stats.acknowledged, "batch_max_records": batch,
            "ingest_events_per_second": round(count / ingest_s),
            "raw_consume_events_per_second": round(count / raw_s),
            "ratio_vs_floor": round(raw_s / ingest_s, 3),
            "goal": "ratio >= 0.6 and ingest_events_per_second >= 50000"}


def bench_freshness(bootstrap: str, work: Path, rate: int, seconds: int,
                    warmup_s: float = 2.0) -> dict[str, Any]:
    """Steady state: the percentiles leave out events produced before the consumer's first
    durable write plus `warmup_s` (start-up backlog, connections, metadata; reported apart).
    The producer starts first, as clicks arrive before an ingest process restarts in
    production."""
    topic = _topic(bootstrap)
    count = rate * seconds
    feeder = subprocess.Popen(
        [sys.executable, "-m", "fraudflow", "--bootstrap-servers", bootstrap, "produce",
         "--synthetic", str(count), "--seed", "6", "--topic", topic, "--rate", str(rate),
         "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ingest = _start_ingest(bootstrap, topic, f"embedded://{work / 'store-freshness'}", count,
                           BatchPolicy())
    _, stderr = feeder.communicate(timeout=seconds * 3 + 60)
    ingest.thread.join(timeout=60)
    if feeder.returncode or ingest.thread.is_alive():
        ingest.stop.set()
        ingest.thread.join()
        raise RuntimeError(f"freshness run incomplete: producer exit {feeder.returncode} "
                           f"({stderr.strip()[-300:]}), {ingest.sink.written}/{count} written")
    sink = ingest.sink
    assert sink.first_write_done is not None
    steady_from_ms = (sink.first_write_done + warmup_s) * 1000
    steady = [latency for produced, latency in zip(sink.produced_ms, sink.latencies,
                                                   strict=True) if produced >= steady_from_ms]
    overall = statistics.quantiles(sink.latencies, n=100)
    cuts = statistics.quantiles(steady, n=100)
    return {"rate_events_per_second": rate, "events": count, "steady_events": len(steady),
            "warmup_seconds": warmup_s,
            "produce_to_queryable_p50_ms": round(statistics.median(steady) * 1000, 1),
            "produce_to_queryable_p99_ms": round(cuts[98] * 1000, 1),
            "including_startup_p99_ms": round(overall[98] * 1000, 1),
            "goal": "p99 <= 200 ms at 5000 events/s (steady state)"}


def run_benchmarks(events: int = 300_000, rate: int = 5000, seconds: int = 20,
                   bootstrap: str | None = None) -> dict[str, Any]:
    """Runs against `bootstrap`, or a broker of its own started for the run."""
    with tempfile.TemporaryDirectory(prefix="fraudflow-bench-ingest-") as tmp:
        work = Path(tmp)
        started_here = bootstrap is None
        if bootstrap is None:
            info = broker.start(work / "var", port=free_port(),
                                controller_port=free_port())
            bootstrap = info.bootstrap_servers
        try:
            return {"throughput": bench_throughput(bootstrap, work, events),
                    "freshness": bench_freshness(bootstrap, work, rate, seconds)}
        finally:
            if started_here:
                broker.stop(work / "var")
