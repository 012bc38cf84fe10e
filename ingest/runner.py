"""The consumer run loop shared by `fraudflow ingest` and `fraudflow archive`.

Checkpoint order, per batch: the sink writes the batch durably (rows, and for the embedded
store the offsets in the same transaction), then the loop commits the offsets to Kafka.
A failed write is retried until it succeeds or the process is stopped; a batch is never
skipped, and its offsets are never committed before it is durable.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kafka.consumer.fetcher import ConsumerRecord

from ingest import metrics
from ingest.kafka_io import BatchConsumer, Positions

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
MAX_BACKOFF_S = 10.0


class Sink(Protocol):
    name: str  # "ingest" | "archive": the metrics' consumer label

    def process(self, records: list[ConsumerRecord]) -> Positions:
        """Handle a batch; return the positions now durable (to commit to Kafka)."""

    def flush(self) -> Positions:
        """Make anything buffered durable; return the positions now durable."""

    def resume_positions(self, partitions: list[int]) -> Positions:
        """Offsets the sink recorded itself, to resume from on assignment."""

    def close(self) -> None: ...


class TransientError(Exception):
    """Raised by sinks for errors worth retrying (store locked, broker away)."""


@dataclass(frozen=True)
class RunStats:
    consumed: int
    seconds: float


def run(consumer: BatchConsumer, sink: Sink, stop: threading.Event,
        until_idle_s: float | None = None) -> RunStats:
    """Consume until `stop` is set, or (with until_idle_s) once caught up and idle that long."""
    consumed = 0
    started = time.monotonic()
    idle_since: float | None = None
    next_lag_check = 0.0
    reported: set[int] = set()  # partitions whose lag this process exports
    try:
        while not stop.is_set():
            batch = consumer.poll_batch()
            if batch:
                idle_since = None
                consumed += len(batch)
                metrics.MESSAGES_CONSUMED.labels(sink.name, consumer.topic).inc(len(batch))
                positions = _retry(functools.partial(sink.process, batch), sink.name, stop)
            else:
                positions = _retry(sink.flush, sink.name, stop)
            if positions is None:  # stopped while retrying: nothing more is durable
                break
            consumer.commit(positions)
            now = time.monotonic()
            if now >= next_lag_check or (until_idle_s is not None and not batch):
                lag = _report_lag(consumer, sink.name, reported)
                next_lag_check = now + LAG_INTERVAL_S
                # caught up = partitions assigned and none behind (no assignment yet: a
                # rebalance is pending, e.g. a killed member's session has not expired)
                if not batch and until_idle_s is not None and lag and not any(lag.values()):
                    idle_since = idle_since or now
                    if now - idle_since >= until_idle_s:
                        log.info("%s: caught up and idle for %.1fs, exiting", sink.name,
                                 until_idle_s)
                        break
        else:
            log.info("%s: stopping", sink.name)
        final = _retry(sink.flush, sink.name, threading.Event())
        if final:
            consumer.commit(final)
    finally:
        sink.close()
        consumer.close()
    return RunStats(consumed, time.monotonic() - started)


def _retry(action: Callable[[], Positions], name: str,
           stop: threading.Event) -> Positions | None:
    backoff = 0.1
    while True:
        try:
            return action()
        except TransientError as exc:
            metrics.WRITE_RETRIES.labels(name).inc()
            log.warning("%s: write failed (%s), retrying in %.1fs", name, exc, backoff)
            if stop.wait(backoff):
                return None
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def _report_lag(consumer: BatchConsumer, name: str, reported: set[int]) -> dict[int, int]:
    try:
        lag = consumer.lag()
    except Exception as exc:  # lag is only reported; the broker may be away for a moment
        log.debug("lag unavailable: %s", exc)
        return {}
    for partition, messages in lag.items():
        metrics.LAG.labels(name, consumer.topic, str(partition)).set(messages)
    for partition in reported - lag.keys():  # moved to another member: its lag is theirs
        metrics.LAG.remove(name, consumer.topic, str(partition))
    reported.clear()
    reported.update(lag)
    return lag
