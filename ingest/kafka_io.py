"""The Kafka side of the consumers: batched polling with explicit offset control, and the
dead-letter producer. Knows nothing of click events or stores."""

from __future__ import annotations

import functools
import logging
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition

from core.config import KAFKA_MESSAGE_MAX_BYTES
from ingest.exceptions import IngestError
from ingest.kafka_compat import finish_interrupted_joins

log = logging.getLogger(__name__)

# partition → the offset to resume from (the next offset to read)
Positions = dict[int, int]
JOIN_POLL_S = 1.0  # the shortest poll while the member has no partitions
READY_CHECK_S = 0.005  # how often a held batch checks whether the sink has become free
BROKER_RETRY_S = 0.5  # the pause after poll() failed to reach the broker


@dataclass(frozen=True)
class BatchPolicy:
    """A batch goes to the sink as soon as the sink is free (group commit: at low rates a
    fetch is written at once, at high rates batches grow while the previous one is written),
    and at the latest `max_latency_s` after its first message or once `max_records` long."""

    max_records: int = 5000
    max_latency_s: float = 0.05


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        partitions = sorted(tp.partition for tp in revoked)
        log.info("partitions revoked: %s", partitions)
        # A sink that buffers makes its buffer durable now, before another member takes over
        # (the sink's own record of positions is what the next owner resumes from). The
        # listener runs on kafka-python's IO thread, which must not block on a commit: the
        # positions are committed to the group by the next commit() call.
        if self.owner.before_revoke is not None:
            self.owner.defer_commit(self.owner.before_revoke(partitions))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = sorted(tp.partition for tp in assigned)
        log.info("partitions assigned: %s", partitions)
        resume = self.owner.resume_positions(partitions) if self.owner.resume_positions else {}
        for partition, offset in resume.items():
            self.owner.consumer.seek(TopicPartition(self.owner.topic, partition), offset)


class BatchConsumer:
    """A consumer-group member that hands out batches and commits only what it is told.

    `resume_positions(partitions)` is asked on every assignment for offsets the sink itself
    recorded (e.g. in the same transaction as the rows); those win over the group's commits.
    `before_revoke(partitions)` lets a buffering sink write what it holds before the partitions
    move to another member; the positions it returns are committed.
    """

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str,
                 policy: BatchPolicy = BatchPolicy(),
                 resume_positions: Callable[[list[int]], Positions] | None = None,
                 before_revoke: Callable[[list[int]], Positions] | None = None,
                 client_id: str = "fraudflow") -> None:
        self.topic = topic
        self.policy = policy
        self.resume_positions = resume_positions
        self.before_revoke = before_revoke
        self._deferred: Positions = {}  # to commit with the next commit() call
        self._sent: Positions = {}  # the newest offsets sent for commit, per partition
        # the rebalance listener (defer_commit) runs on kafka-python's IO thread
        self._commit_lock = threading.Lock()
        finish_interrupted_joins()  # our short polls during a rebalance hit that bug
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=policy.max_records,
            max_partition_fetch_bytes=KAFKA_MESSAGE_MAX_BYTES,
            fetch_max_bytes=4 * KAFKA_MESSAGE_MAX_BYTES,
            receive_buffer_bytes=1 << 20,
            # a slow store write must not get the member kicked out of the group
            max_poll_interval_ms=600_000,
            # a crashed member's partitions move to the others after 10 s, not 45 s
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            # new partitions of the topic are found within 30 s
            metadata_max_age_ms=30_000,
        )
        self._wait_for_topic(timeout_s=30)
        self.consumer.subscribe([topic], listener=_Listener(self))

    def _wait_for_topic(self, timeout_s: float) -> None:
        # Joining the group before the topic's metadata is known gets no partitions until
        # the next metadata refresh; with auto-creation, asking also creates the topic.
        deadline = time.monotonic() + timeout_s
        while not self.consumer.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                self.consumer.close()
                raise IngestError(f"topic {self.topic!r} does not exist (after {timeout_s}s)")
            time.sleep(0.2)

    def poll_batch(self, sink_ready: Callable[[], bool] = lambda: False
                   ) -> list[ConsumerRecord]:
        """Up to max_records messages, returned once full, once `sink_ready()` with at least
        one message, or max_latency after the first."""
        batch: list[ConsumerRecord] = []
        deadline: float | None = None
        while len(batch) < self.policy.max_records:
            if deadline is None:
                wait = self.policy.max_latency_s
            elif sink_ready():
                break
            else:
                wait = min(deadline - time.monotonic(), READY_CHECK_S)
                if wait <= 0:
                    break
            if not self.consumer.assignment():
                # Joining the group takes several round trips inside poll(): give it the
                # time for them rather than resuming it poll after poll (a join interrupted
                # at the wrong moment was never resumed: see kafka_compat.py).
                wait = max(wait, JOIN_POLL_S)
            asked = time.monotonic()
            try:
                polled = self.consumer.poll(timeout_ms=int(wait * 1000),
                                            max_records=self.policy.max_records - len(batch))
            except KafkaError as exc:
                # kafka-python raises from poll() when it cannot reach the group coordinator
                # (a broker restarting): wait for it instead of crashing
                log.warning("broker unavailable (%s); polling again in %.1fs", exc,
                            BROKER_RETRY_S)
                time.sleep(BROKER_RETRY_S)
                break
            if not polled and not self.consumer.assignment():
                # without partitions poll() returns at once: do not spin while a rebalance
                # is pending
                time.sleep(max(0.0, wait - (time.monotonic() - asked)))
            for records in polled.values():
                batch.extend(records)
            if batch and deadline is None:
                deadline = time.monotonic() + self.policy.max_latency_s
            if not polled and deadline is None:
                break  # idle: let the caller check for shutdown / idleness
        return batch

    def commit(self, positions: Positions, wait: bool = False) -> None:
        """Commit the next offsets to read, per partition, to the consumer group: in the
        background, so the batch loop never waits on the group coordinator, or with `wait`
        before returning, together with every offset sent so far for the partitions held
        (the end of a run: a background commit still in flight must not be lost).

        A failed commit (a rebalance in progress, the broker away) is logged, not raised:
        the sinks resume from positions they record themselves, and the failed offsets are
        sent again with the next call unless newer ones for their partitions were sent."""
        with self._commit_lock:
            positions = {**self._deferred, **positions}
            self._deferred = {}
            if wait:
                held = {tp.partition for tp in self.consumer.assignment()}
                positions = {**{p: o for p, o in self._sent.items() if p in held}, **positions}
            self._sent.update(positions)
        if not positions:
            return
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                   for p, o in positions.items()}
        try:
            if wait:
                self.consumer.commit(offsets)
            else:
                self.consumer.commit_async(offsets, callback=self._on_commit)
        except KafkaError as exc:
            self._commit_later(positions, exc)

    def defer_commit(self, positions: Positions) -> None:
        """Commit these with the next commit() call."""
        with self._commit_lock:
            self._deferred.update(positions)

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata],
                   response: object) -> None:
        if isinstance(response, Exception):
            self._commit_later({tp.partition: meta.offset for tp, meta in offsets.items()},
                               response)

    def _commit_later(self, positions: Positions, exc: Exception) -> None:
        log.warning("offset commit failed (%s); retried with the next commit", exc)
        with self._commit_lock:
            unsuperseded = {p: o for p, o in positions.items() if self._sent.get(p) == o}
            self._deferred = {**unsuperseded, **self._deferred}

    def lag(self) -> dict[int, int]:
        """End offset minus this member's position for each assigned partition. The end is
        the high watermark of the last fetch response where there is one: asking the broker
        (ListOffsets) stalled the batch loop by up to 0.5 s here."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        ends: dict[TopicPartition, int] = {}
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = highwater
        unknown = [tp for tp in assigned if tp not in ends]
        if unknown:  # not fetched yet
            ends.update(self.consumer.end_offsets(unknown))
        return {tp.partition: max(0, ends[tp] - self.consumer.position(tp)) for tp in assigned}

    def group_caught_up(self) -> bool:
        """Every partition of the topic read to its end by the group: this member's positions
        for its partitions, the group's commits for the others (a crashed member may still
        hold some until its session expires)."""
        try:
            partitions = [TopicPartition(self.topic, p)
                          for p in self.consumer.partitions_for_topic(self.topic)]
            ends = self.consumer.end_offsets(partitions)
            assigned = self.consumer.assignment()
            for tp in partitions:
                done = self.consumer.position(tp) if tp in assigned else \
                    (self.consumer.committed(tp) or 0)
                if done < ends[tp]:
                    return False
        except KafkaError as exc:  # the broker away: not known to be caught up
            log.debug("group progress unavailable: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.consumer.close(autocommit=False)  # leaves the group


def without_refetches(records: Iterable[ConsumerRecord],
                      next_offsets: Positions | None = None) -> list[ConsumerRecord]:
    """The records minus any whose partition offset was already passed: a rebalance inside
    one poll batch seeks back and fetches some records a second time. `next_offsets` (updated
    in place) carries what earlier batches passed."""
    records = list(records)
    passed = {} if next_offsets is None else next_offsets
    return [records[i] for i in _first_reads([r.partition for r in records],
                                             [r.offset for r in records], passed)]


def _first_reads(partitions: Iterable[int], offsets: Iterable[int],
                 passed: Positions) -> list[int]:
    """The indexes of the offsets not passed yet, per partition; `passed` (the next offset to
    read per partition) is updated in place."""
    kept: list[int] = []
    for index, (partition, offset) in enumerate(zip(partitions, offsets, strict=True)):
        if offset >= passed.get(partition, -1):
            kept.append(index)
            passed[partition] = offset + 1
    return kept


@dataclass(frozen=True)
class PackedRecords:
    """One topic's records in a few flat buffers, to hand a batch to another process: pickling
    20k ConsumerRecords costs the consumer ~75 ms, these buffers a few ms. Keeps what the sinks
    read: partition, offset, timestamp, key and value."""

    topic: str
    partitions: array
    offsets: array
    timestamps: array
    key_sizes: array  # -1: no key
    keys: bytes
    value_sizes: array  # -1: no value (tombstone)
    values: bytes

    @classmethod
    def pack(cls, records: Sequence[ConsumerRecord]) -> PackedRecords:
        # one pass per field read: transposing all 13 fields (zip(*records)) cost twice as much
        topics = {r.topic for r in records}
        if len(topics) > 1:
            raise ValueError(f"records of several topics: {sorted(topics)}")
        key_sizes, keys = _concatenate([r.key for r in records])
        value_sizes, values = _concatenate([r.value for r in records])
        return cls(topics.pop() if topics else "", array("i", [r.partition for r in records]),
                   array("q", [r.offset for r in records]),
                   array("q", [r.timestamp for r in records]),
                   key_sizes, keys, value_sizes, values)

    def __len__(self) -> int:
        return len(self.offsets)

    @functools.cached_property
    def value_list(self) -> list[bytes | None]:
        return _split(self.values, self.value_sizes)

    @functools.cached_property
    def key_list(self) -> list[bytes | None]:
        return _split(self.keys, self.key_sizes)

    def record(self, index: int) -> ConsumerRecord:
        """The record at `index` (built on demand: only dead letters need whole records)."""
        key, value = self.key_list[index], self.value_list[index]
        return ConsumerRecord(self.topic, self.partitions[index], -1, self.offsets[index],
                              self.timestamps[index], 0, key, value, [], None,
                              len(key or b""), len(value or b""), 0)

    def first_reads(self) -> tuple[list[int], Positions, Positions]:
        """The indexes of the records read for the first time in this batch (a rebalance
        inside one poll seeks back and fetches some twice), the lowest offset read and the
        next offset to read per partition."""
        after: Positions = {}
        kept = _first_reads(self.partitions, self.offsets, after)
        lowest: Positions = {}
        for index in kept:
            lowest.setdefault(self.partitions[index], self.offsets[index])
        return kept, lowest, after


def _concatenate(parts: Sequence[bytes | None]) -> tuple[array, bytes]:
    if None not in parts:  # the common case, at C speed
        return array("q", map(len, parts)), b"".join(parts)  # type: ignore[arg-type]
    return (array("q", [-1 if p is None else len(p) for p in parts]),
            b"".join(p for p in parts if p is not None))


def _split(blob: bytes, sizes: array) -> list[bytes | None]:
    parts: list[bytes | None] = []
    start = 0
    for size in sizes:
        if size < 0:
            parts.append(None)
        else:
            parts.append(blob[start:start + size])
            start += size
    return parts


class DeadLetterProducer:
    """Sends invalid messages to `<topic>.dlq`, unchanged, with why and where in headers."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = f"{topic}.dlq"
        self.producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all",
                                      retries=2**31 - 1, max_request_size=KAFKA_MESSAGE_MAX_BYTES,
                                      linger_ms=5)
        self._pending: list[FutureRecordMetadata] = []

    def send(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        headers = [
            ("reason", reason.encode()),
            ("detail", detail.encode()[:1024]),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        self._pending.append(self.producer.send(self.topic, key=record.key, value=record.value,
                                                headers=headers))

    def flush(self) -> None:
        """Block until every dead letter sent so far is acknowledged (acks=all), or raise."""
        if not self._pending:
            return  # most batches have none: no round trip to the producer's sender thread
        pending, self._pending = self._pending, []
        try:
            self.producer.flush(timeout=60)
            for future in pending:
                future.get(timeout=60)  # flush() does not report failed sends; futures do
        except KafkaError as exc:
            raise IngestError(f"dead-letter topic {self.topic} unavailable: {exc}") from exc

    def close(self) -> None:
        self.producer.close(timeout=10)
