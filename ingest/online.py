"""The ingest consumer's sink: click events → the OpenMLDB online table; invalid → DLQ.

Embedded store: the consumed offsets are written in the same SQLite transaction as the rows,
and the consumer resumes from them on assignment, so a crash at any point gives exactly-once
rows. Real OpenMLDB (no transactions): rows first, then the Kafka commit — at-least-once.
"""

from __future__ import annotations

import logging
import time

from kafka.consumer.fetcher import ConsumerRecord

import features
from features.exceptions import DataError
from ingest import events, metrics
from ingest.kafka_io import DeadLetterProducer, Positions, positions_after, without_refetches
from ingest.runner import TransientError

log = logging.getLogger(__name__)


class OnlineTableSink:
    name = "ingest"

    def __init__(self, store_url: str, database: str, table: str, topic: str, group_id: str,
                 dead_letters: DeadLetterProducer) -> None:
        self.topic = topic
        self.group_id = group_id
        self.dead_letters = dead_letters
        self.conn = features.connect(store_url, database)
        self.exactly_once = features.is_embedded(store_url)
        self.cursor = self.conn.cursor()
        self.cursor.execute("SET @@execute_mode='online'")
        columns = ", ".join(events.TABLE_COLUMNS)
        self.insert = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * 7)})"

    def resume_positions(self, partitions: list[int]) -> Positions:
        if not self.exactly_once:
            return {}
        stored = self.conn.store.stored_offsets(self.group_id, self.topic)
        return {p: o for p, o in stored.items() if p in partitions}

    def process(self, records: list[ConsumerRecord]) -> Positions:
        records = without_refetches(records)
        rows: list[tuple[ConsumerRecord, events.Row]] = []
        newest_ms = 0
        for record in records:
            decoded = events.decode(record.value)
            if isinstance(decoded, events.InvalidEvent):
                self._dead_letter(record, decoded.reason, decoded.detail)
            else:
                rows.append((record, decoded))
                newest_ms = max(newest_ms, decoded[5])
        positions = positions_after(records)
        started = time.perf_counter()
        try:
            self.dead_letters.flush()  # dead letters are safe before their offsets commit
            written = self._write(rows, positions)
        except Exception as exc:
            # Store or broker trouble (locked, unreachable, timed out): retried by the run loop,
            # with backoff and a metric, rather than crashing or skipping the batch.
            self.conn.rollback()
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        finished = time.time()
        metrics.WRITE_DURATION.labels(self.name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(self.name).observe(len(records))
        metrics.ROWS_WRITTEN.labels(self.name, self.topic).inc(written)
        if rows:
            metrics.LAST_EVENT_TIME.labels(self.name).set(newest_ms / 1000)
            metrics.LAST_WRITE_TIME.labels(self.name).set(finished)
        # one observation per batch, of its oldest event: the batch's worst freshness, at a
        # fraction of the cost of observing every event
        oldest_ms = min(record.timestamp for record in records)
        metrics.PRODUCE_TO_WRITE.labels(self.name).observe(max(0.0, finished - oldest_ms / 1000))
        return positions

    def _write(self, rows: list[tuple[ConsumerRecord, events.Row]],
               positions: Positions) -> int:
        """Insert the rows (and, embedded, their offsets) in one transaction; the count written.

        Embedded store: rows at offsets the store already holds are skipped inside the
        transaction. A rebalance can leave this member with polled records of a partition that
        another member has since written; this fence keeps them from being written twice."""
        if self.exactly_once:
            store = self.conn.store
            store.begin()
            stored = store.stored_offsets(self.group_id, self.topic)
            rows = [(r, row) for r, row in rows if r.offset >= stored.get(r.partition, 0)]
            positions = {p: max(o, stored.get(p, 0)) for p, o in positions.items()}
        try:
            self.cursor.executemany(self.insert, [row for _, row in rows])
        except DataError:
            # The store refused the batch: find the rows it refuses and dead-letter just those.
            self.conn.rollback()
            rows = self._dead_letter_refused(rows)
            return self._write(rows, positions)
        if self.exactly_once:
            self.conn.store.store_offsets(self.group_id, self.topic, positions)
        self.conn.commit()
        return len(rows)

    def _dead_letter_refused(self, rows: list[tuple[ConsumerRecord, events.Row]]
                             ) -> list[tuple[ConsumerRecord, events.Row]]:
        accepted = []
        for record, row in rows:
            try:
                self.cursor.executemany(self.insert, [row])
                accepted.append((record, row))
            except DataError as exc:
                self._dead_letter(record, "store_rejected", str(exc))
        self.conn.rollback()
        self.dead_letters.flush()
        return accepted

    def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        self.dead_letters.send(record, reason, detail)
        metrics.INVALID_EVENTS.labels(self.name, self.topic, reason).inc()
        metrics.DEAD_LETTERS.labels(self.name, self.topic).inc()

    def flush(self) -> Positions:
        return {}  # every batch is written before process() returns

    def close(self) -> None:
        self.conn.close()
        self.dead_letters.close()
