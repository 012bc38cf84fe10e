"""The ingest consumer's writes in a child process, so they run on the second core.

kafka-python parses fetched records in Python, and decoding, validating and inserting a batch
is Python too: in one process they share one GIL and take turns (measured: ~35k events/s,
the sum of both). Here the consumer process fetches and parses while a writer process decodes,
writes and dead-letters the previous batch. The child owns the store connection and the
dead-letter producer; the parent keeps the metrics, fed by each batch's report.

Crash safety is unchanged: the child writes the offsets in the same transaction as the rows,
and a batch counts as durable only when the child says so. The child ignores SIGINT/SIGTERM
(the parent stops it between batches) and exits if the parent dies.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from kafka.consumer.fetcher import ConsumerRecord

from ingest.kafka_io import PackedRecords, Positions
from ingest.online import BatchReport, OnlineTableSink, record_metrics

# The sink of this process when it is a writer process (set by _start).
_sink: OnlineTableSink | None = None


def _start(make_sink: Callable[[], OnlineTableSink], parent_pid: int) -> None:
    global _sink
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    _sink = make_sink()
    gc.freeze()  # as the run loop does: full collections skip the long-lived objects


def _exit_with_parent(parent_pid: int) -> None:
    # A kill -9 of the consumer must not leave an orphan writer holding the store.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _write(batch: PackedRecords) -> BatchReport:
    assert _sink is not None
    return _sink.write(batch)


def _resume_positions(partitions: list[int]) -> Positions:
    assert _sink is not None
    return _sink.resume_positions(partitions)


def _ready() -> None:
    """Nothing: answering shows that the child started and built its sink."""


def _close() -> None:
    if _sink is not None:
        _sink.close()


class WriterProcessSink:
    """An OnlineTableSink running in a writer process, with the Sink interface of the run loop.

    `make_sink` builds the sink in the child; it must pickle (e.g. functools.partial of
    OnlineTableSink with its arguments)."""

    name = OnlineTableSink.name

    def __init__(self, make_sink: Callable[[], OnlineTableSink], topic: str) -> None:
        self.topic = topic
        # spawn: the parent runs kafka-python's IO thread, and forking a threaded process
        # can copy a held lock
        self._executor = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
            initargs=(make_sink, os.getpid()))
        self._executor.submit(_ready).result()  # a sink that cannot start fails here

    def process(self, records: list[ConsumerRecord]) -> Positions:
        report = self._executor.submit(_write, PackedRecords.pack(records)).result()
        record_metrics(self.name, self.topic, report)
        return report.positions

    def flush(self) -> Positions:
        return {}  # every batch is written before process() returns

    def resume_positions(self, partitions: list[int]) -> Positions:
        return self._executor.submit(_resume_positions, partitions).result()

    def close(self) -> None:
        try:
            self._executor.submit(_close).result()
        finally:
            self._executor.shutdown(wait=True)
