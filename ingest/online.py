"""The ingest consumer's sink: click events → the OpenMLDB online table; invalid → DLQ.

Embedded store: the consumed offsets are written in the same SQLite transaction as the rows,
and the consumer resumes from them on assignment, so a crash at any point gives exactly-once
rows. Real OpenMLDB (no transactions): rows first, then the Kafka commit — at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

import features
from core import events
from core.exceptions import TransientError
from features.exceptions import DataError
from ingest import metrics
from ingest.exceptions import IngestError, SinkUnavailableError
from ingest.kafka_io import DeadLetterProducer, PackedRecords, Positions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    """What writing one batch did."""

    positions: Positions  # now durable
    records: int
    written: int
    dead_letters: dict[str, int]  # by reason
    write_seconds: float
    finished: float  # epoch seconds
    newest_event_ms: int  # click_time; 0: no valid event
    oldest_produced_ms: int  # Kafka timestamp


def record_metrics(consumer: str, topic: str, report: BatchReport) -> None:
    metrics.WRITE_DURATION.labels(consumer).observe(report.write_seconds)
    metrics.BATCH_SIZE.labels(consumer).observe(report.records)
    metrics.ROWS_WRITTEN.labels(consumer, topic).inc(report.written)
    for reason, count in report.dead_letters.items():
        metrics.INVALID_EVENTS.labels(consumer, topic, reason).inc(count)
        metrics.DEAD_LETTERS.labels(consumer, topic).inc(count)
    if report.newest_event_ms:
        metrics.LAST_EVENT_TIME.labels(consumer).set(report.newest_event_ms / 1000)
        metrics.LAST_WRITE_TIME.labels(consumer).set(report.finished)
    if report.records:
        # one observation per batch, of its oldest event: the batch's worst freshness, at a
        # fraction of the cost of observing every event
        metrics.PRODUCE_TO_WRITE.labels(consumer).observe(
            max(0.0, report.finished - report.oldest_produced_ms / 1000))


class OnlineTableSink:
    name = "ingest"

    def __init__(self, store_url: str, database: str, table: str, topic: str, group_id: str,
                 dead_letters: DeadLetterProducer) -> None:
        self.topic = topic
        self.table = table
        self.group_id = group_id
        self.dead_letters = dead_letters
        self.conn = features.connect(store_url, database)
        # Only the embedded store has transactions: it stores the offsets with the rows.
        self.offsets = self.conn if isinstance(self.conn, features.EmbeddedConnection) else None
        self.cursor = self.conn.cursor()
        self.cursor.execute("SET @@execute_mode='online'")
        columns = ", ".join(events.TABLE_COLUMNS)
        self.insert = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * 7)})"
        self._invalid: Counter[str] = Counter()  # the batch's dead letters by reason

    def resume_positions(self, partitions: list[int]) -> Positions:
        if self.offsets is None:
            return {}
        stored = self.offsets.stored_offsets(self.group_id, self.topic)
        return {p: o for p, o in stored.items() if p in partitions}

    def process(self, records: list[ConsumerRecord]) -> Positions:
        report = self.write(PackedRecords.pack(records))
        record_metrics(self.name, self.topic, report)
        return report.positions

    def write(self, batch: PackedRecords) -> BatchReport:
        """Dead-letter the invalid events, write the rest durably; what happened, for metrics
        (recorded by the caller: a writer process reports to the consumer's registry)."""
        self._invalid = Counter()
        kept, lowest, positions = batch.first_reads()
        values = batch.value_list
        indexes: list[int] = []  # of the valid events in the batch
        rows: list[events.Row] = []
        for index, decoded in zip(kept, events.decode_batch([values[i] for i in kept]),
                                  strict=True):
            if isinstance(decoded, events.InvalidEvent):
                self._dead_letter(batch.record(index), decoded.reason, decoded.detail)
            else:
                indexes.append(index)
                rows.append(decoded)
        started = time.perf_counter()
        try:
            self.dead_letters.flush()  # dead letters are safe before their offsets commit
            written = self._write(batch, indexes, rows, lowest, positions)
        except KafkaError as exc:  # the dead-letter topic's broker is away
            self.conn.rollback()
            raise SinkUnavailableError(f"dead-letter topic: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            self.conn.rollback()
            classified = features.classify_store_error(exc)
            if isinstance(classified, TransientError):
                # locked, unreachable, timed out: retried by the run loop with backoff and a
                # metric, rather than crashing or skipping the batch
                raise SinkUnavailableError(str(classified)) from exc
            if classified is not None:
                # a missing table, a refused statement: no retry can help; stop with the cause
                # (the batch's offsets are not committed, so nothing is lost)
                raise IngestError(f"online table {self.table}: {classified}") from exc
            raise  # a bug: surface it with its traceback
        return BatchReport(positions, len(batch), written, dict(self._invalid),
                           time.perf_counter() - started, time.time(),
                           max((row[5] for row in rows), default=0),
                           min(batch.timestamps, default=0))

    def _write(self, batch: PackedRecords, indexes: list[int], rows: list[events.Row],
               lowest: Positions, positions: Positions) -> int:
        """Insert the rows (and, embedded, their offsets) in one transaction; the count written.

        Embedded store: rows at offsets the store already holds are skipped inside the
        transaction. A rebalance can leave this member with polled records of a partition that
        another member has since written; this fence keeps them from being written twice."""
        if self.offsets is not None:
            self.offsets.begin()
            stored = self.offsets.stored_offsets(self.group_id, self.topic)
            if any(offset < stored.get(p, 0) for p, offset in lowest.items()):
                fresh = [n for n, i in enumerate(indexes)
                         if batch.offsets[i] >= stored.get(batch.partitions[i], 0)]
                indexes, rows = [indexes[n] for n in fresh], [rows[n] for n in fresh]
            positions = {p: max(o, stored.get(p, 0)) for p, o in positions.items()}
        try:
            self.cursor.executemany(self.insert, rows)
        except DataError:
            # The store refused the batch: find the rows it refuses and dead-letter just those.
            self.conn.rollback()
            indexes, rows = self._dead_letter_refused(batch, indexes, rows)
            return self._write(batch, indexes, rows, lowest, positions)
        if self.offsets is not None:
            self.offsets.store_offsets(self.group_id, self.topic, positions)
        self.conn.commit()
        return len(rows)

    def _dead_letter_refused(self, batch: PackedRecords, indexes: list[int],
                             rows: list[events.Row]) -> tuple[list[int], list[events.Row]]:
        accepted: tuple[list[int], list[events.Row]] = ([], [])
        for index, row in zip(indexes, rows, strict=True):
            try:
                self.cursor.executemany(self.insert, [row])
                accepted[0].append(index)
                accepted[1].append(row)
            except DataError as exc:
                self._dead_letter(batch.record(index), "store_rejected", str(exc))
        self.conn.rollback()
        self.dead_letters.flush()
        return accepted

    def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        self.dead_letters.send(record, reason, detail)
        self._invalid[reason] += 1

    def flush(self) -> Positions:
        return {}  # every batch is written before process() returns

    def close(self) -> None:
        self.conn.close()
        self.dead_letters.close()
