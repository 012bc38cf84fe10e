"""The archive consumer's sink: click events → hourly lake files, exactly once.

Layout (`core.lake`): `<lake>/<topic>/date=YYYY-MM-DD/hour=HH/<topic>-p<P>-<first>-<last>.parquet`
by the UTC+8 wall-clock hour of each click, `first`/`last` the Kafka offset range of the flush
that wrote the file.

A flush commits like a database: the files are written under temporary names, then a journal
per partition (`<lake>/_archive/<topic>/p<P>.json`) records the next offset and the renames
to do (atomic replace: the commit point), then the files are renamed into place. On
assignment, a journal's renames are finished (roll forward) and other temporary files are
deleted (roll back), and the consumer resumes from the journal's offset: no row is lost or
written twice, whatever moment the process dies. The offline import only reads final names.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from kafka.consumer.fetcher import ConsumerRecord

from core import events, lake
from ingest import metrics
from ingest.exceptions import SinkUnavailableError
from ingest.kafka_io import Positions, without_refetches

log = logging.getLogger(__name__)



@dataclass
class _Buffer:
    first_offset: int
    next_offset: int
    rows: list[events.Row] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # each row's Kafka offset


class LakeSink:
    name = "archive"

    def __init__(self, lake_dir: Path, topic: str, file_format: str = "parquet",
                 max_rows: int = 200_000, max_age_s: float = 30.0) -> None:
        if file_format not in {"parquet", "csv"}:
            raise ValueError(f"archive format must be parquet or csv, not {file_format!r}")
        self.lake = Path(lake_dir)
        self.topic = topic
        self.topic_lake = lake.TopicLake(self.lake, topic)
        self.clock = self.topic_lake.claim()
        self.file_format = file_format
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.journals = self.lake / "_archive" / topic
        self.buffers: dict[int, _Buffer] = {}
        self.buffered_since: float | None = None

    # --- recovery ---------------------------------------------------------------------------

    def resume_positions(self, partitions: list[int]) -> Positions:
        positions: Positions = {}
        for partition in partitions:
            self.buffers.pop(partition, None)
            with self._partition_lock(partition):  # a former owner may still be flushing
                journal = self._read_journal(partition)
                for temp, final in journal.get("pending", []):
                    if (self.lake / temp).exists():
                        os.replace(self.lake / temp, self.lake / final)
                self._delete_uncommitted(partition, {t for t, _ in journal.get("pending", [])})
            if "next_offset" in journal:
                positions[partition] = journal["next_offset"]
        return positions

    @contextmanager
    def _partition_lock(self, partition: int) -> Iterator[None]:
        """One process at a time commits or recovers a partition's files."""
        self.journals.mkdir(parents=True, exist_ok=True)
        with (self.journals / f"p{partition}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _delete_uncommitted(self, partition: int, keep: set[str]) -> None:
        pattern = f"date=*/hour=*/{self.topic}-p{partition}-*{lake.TEMP_SUFFIX}"
        for temp in self.topic_lake.home.glob(pattern):
            if str(temp.relative_to(self.lake)) not in keep:
                temp.unlink(missing_ok=True)

    def _journal_path(self, partition: int) -> Path:
        return self.journals / f"p{partition}.json"

    def _read_journal(self, partition: int) -> dict:
        try:
            return json.loads(self._journal_path(partition).read_text())
        except FileNotFoundError:
            return {}

    def _write_journal(self, partition: int, content: dict) -> None:
        self.journals.mkdir(parents=True, exist_ok=True)
        path = self._journal_path(partition)
        temp = path.with_suffix(lake.TEMP_SUFFIX)
        with temp.open("w") as handle:
            json.dump(content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)

    # --- batches ----------------------------------------------------------------------------

    def process(self, records: list[ConsumerRecord]) -> Positions:
        passed = {p: b.next_offset for p, b in self.buffers.items()}
        for record in without_refetches(records, passed):
            buffer = self.buffers.get(record.partition)
            if buffer is None:
                buffer = self.buffers[record.partition] = _Buffer(record.offset, record.offset)
            buffer.next_offset = record.offset + 1
            decoded = events.decode(record.value)
            if isinstance(decoded, events.InvalidEvent):
                # the ingest consumer dead-letters it; the lake only keeps valid clicks
                metrics.INVALID_EVENTS.labels(self.name, self.topic, decoded.reason).inc()
            else:
                buffer.rows.append(decoded)
                buffer.offsets.append(record.offset)
        if self.buffered_since is None:
            self.buffered_since = time.monotonic()
        buffered = sum(len(b.rows) for b in self.buffers.values())
        if buffered >= self.max_rows or time.monotonic() - self.buffered_since >= self.max_age_s:
            return self.flush()
        return {}

    def flush(self, partitions: list[int] | None = None) -> Positions:
        """Write the buffers of these partitions (default all); return their new positions."""
        positions: Positions = {}
        for partition in sorted(self.buffers if partitions is None else partitions):
            buffer = self.buffers.get(partition)
            if buffer is None:
                continue
            started = time.perf_counter()
            try:
                written = self._commit(partition, buffer)
            except OSError as exc:
                raise SinkUnavailableError(f"lake write failed: {exc}") from exc
            del self.buffers[partition]
            positions[partition] = buffer.next_offset
            metrics.WRITE_DURATION.labels(self.name).observe(time.perf_counter() - started)
            metrics.ROWS_WRITTEN.labels(self.name, self.topic).inc(written)
            if buffer.rows:
                metrics.LAST_EVENT_TIME.labels(self.name).set(
                    max(r[5] for r in buffer.rows) / 1000)
                metrics.LAST_WRITE_TIME.labels(self.name).set(time.time())
        if not self.buffers:
            self.buffered_since = None
        return positions

    def before_revoke(self, partitions: list[int]) -> Positions:
        return self.flush([p for p in partitions if p in self.buffers])

    def _commit(self, partition: int, buffer: _Buffer) -> int:
        """Archive the buffer; the number of rows written."""
        with self._partition_lock(partition):
            # Rows at offsets the journal already holds are skipped: after a rebalance this
            # member may still hold polled records of a partition another member archived.
            archived = self._read_journal(partition).get("next_offset", 0)
            if buffer.next_offset <= archived:
                return 0
            rows = [row for row, offset in zip(buffer.rows, buffer.offsets, strict=True)
                    if offset >= archived]
            self._commit_files(partition, max(buffer.first_offset, archived),
                               buffer.next_offset, rows)
            return len(rows)

    def _commit_files(self, partition: int, first_offset: int, next_offset: int,
                      rows: list[events.Row]) -> None:
        pending: list[tuple[str, str]] = []
        for hour_start, hour_rows in _by_hour(rows).items():
            folder = self.topic_lake.hour_folder(hour_start, self.clock)
            folder.mkdir(parents=True, exist_ok=True)
            name = (f"{self.topic}-p{partition}-{first_offset:012d}-"
                    f"{next_offset - 1:012d}.{self.file_format}")
            temp = folder / (name + lake.TEMP_SUFFIX)
            self._write_file(temp, hour_rows)
            pending.append((str(temp.relative_to(self.lake)),
                            str((folder / name).relative_to(self.lake))))
        # the commit point: after this replace the flush counts, and recovery rolls it forward
        self._write_journal(partition, {"next_offset": next_offset, "pending": pending})
        for temp_name, final_name in pending:
            os.replace(self.lake / temp_name, self.lake / final_name)

    def _write_file(self, path: Path, rows: list[events.Row]) -> None:
        columns = list(zip(*rows, strict=True))
        table = pa.Table.from_arrays(
            [pa.array(col, type=f.type) for col, f in zip(columns, lake.SCHEMA, strict=True)],
            schema=lake.SCHEMA)
        if self.file_format == "parquet":
            pq.write_table(table, path)
        else:
            pa_csv.write_csv(table, path)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())

    def close(self) -> None:
        self.buffers.clear()  # unflushed rows are re-read from Kafka by the next owner


def _by_hour(rows: list[events.Row]) -> dict[int, list[events.Row]]:
    """Rows grouped by the start (epoch ms) of the hour of their click_time."""
    by_hour: dict[int, list[events.Row]] = {}
    for row in rows:
        by_hour.setdefault(lake.hour_start_ms(row[5]), []).append(row)
    return by_hour


def archived_files(lake_dir: Path, topic: str) -> list[Path]:
    """Every committed lake file of a topic, oldest hour first."""
    return [f.path for f in lake.TopicLake(lake_dir, topic).files()]
