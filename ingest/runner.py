"""The consumer run loop shared by `fraudflow ingest` and `fraudflow archive`.

Checkpoint order, per batch: the sink writes the batch durably (rows, and for the embedded
store the offsets in the same transaction), then the loop commits the offsets to Kafka.
A failed write is retried until it succeeds or the process is stopped; a batch is never
skipped, and its offsets are never committed before it is durable.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kafka.consumer.fetcher import ConsumerRecord

from core.exceptions import TransientError
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


@dataclass(frozen=True)
class RunStats:
    consumed: int
    seconds: float


class _Writes:
    """Writes batch N on a worker thread while batch N+1 is polled: the archive's file writes
    release the GIL, and the ingest sink hands the batch to its writer process, so fetching
    and writing overlap on two cores. One batch at most is in flight, and its offsets are
    committed only once the caller has seen it durable."""

    def __init__(self, sink: Sink, stop: threading.Event) -> None:
        self.sink = sink
        self.stop = stop
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"{sink.name}-writer")
        self.pending: Future[Positions | None] | None = None

    def submit(self, batch: list[ConsumerRecord]) -> None:
        assert self.pending is None
        self.pending = self.executor.submit(_retry, functools.partial(self.sink.process, batch),
                                            self.sink.name, self.stop)

    def idle(self) -> bool:
        """No batch in flight, or the one in flight is done: the sink can take the next."""
        return self.pending is None or self.pending.done()

    def wait(self) -> Positions | None:
        """The positions the in-flight batch made durable ({} if none was in flight); None if
        the process was stopped while that batch was still failing to write."""
        pending, self.pending = self.pending, None
        return {} if pending is None else pending.result()

    def draining(self, hook: Callable[[list[int]], Positions]) -> Callable[[list[int]], Positions]:
        """`hook` after the in-flight batch is durable: a rebalance must see its offsets."""
        def drained(partitions: list[int]) -> Positions:
            if self.pending is not None:
                self.pending.result()
            return hook(partitions)

        return drained

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def run(consumer: BatchConsumer, sink: Sink, stop: threading.Event,
        until_idle_s: float | None = None) -> RunStats:
    """Consume until `stop` is set, or (with until_idle_s) once caught up and idle that long."""
    consumed = 0
    started = time.monotonic()
    idle_since: float | None = None
    next_lag_check = 0.0
    reported: set[int] = set()  # partitions whose lag this process exports
    # Everything built so far (imports, clients) lives as long as the process: frozen, a full
    # garbage collection no longer walks it (one paused the loop for ~70 ms at 5k events/s).
    gc.freeze()
    writes = _Writes(sink, stop)
    if consumer.resume_positions is not None:
        consumer.resume_positions = writes.draining(consumer.resume_positions)
    if consumer.before_revoke is not None:
        consumer.before_revoke = writes.draining(consumer.before_revoke)
    try:
        while not stop.is_set():
            batch = consumer.poll_batch(writes.idle)
            positions = writes.wait()  # the previous batch, written while this one was polled
            if positions is None:  # stopped while retrying: nothing more is durable
                break
            if batch:
                idle_since = None
                consumed += len(batch)
                metrics.MESSAGES_CONSUMED.labels(sink.name, consumer.topic).inc(len(batch))
                writes.submit(batch)
            # the previous batch's offsets, committed while this one is written
            consumer.commit(positions)
            if not batch:
                flushed = _retry(sink.flush, sink.name, stop)
                if flushed is None:
                    break
                consumer.commit(flushed)
            now = time.monotonic()
            if now >= next_lag_check or (until_idle_s is not None and not batch):
                lag = _report_lag(consumer, sink.name, reported)
                next_lag_check = now + LAG_INTERVAL_S
                # caught up = partitions assigned and none behind (no assignment yet: a
                # rebalance is pending, e.g. a killed member's session has not expired)
                if (not batch and until_idle_s is not None and lag and not any(lag.values())
                        and consumer.group_caught_up()):
                    idle_since = idle_since or now
                    if now - idle_since >= until_idle_s:
                        log.info("%s: caught up and idle for %.1fs, exiting", sink.name,
                                 until_idle_s)
                        break
        else:
            log.info("%s: stopping", sink.name)
        last = writes.wait()
        final = _retry(sink.flush, sink.name, threading.Event())
        consumer.commit({**(last or {}), **(final or {})}, wait=True)
    finally:
        writes.close()
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
