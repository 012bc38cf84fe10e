"""After a rebalance a member may still hold polled records of a partition that another
member has written since; writing them again must not duplicate rows (embedded store, lake)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kafka.consumer.fetcher import ConsumerRecord

import features
from core import events
from features.store import init_store
from ingest.archive import LakeSink, archived_files
from ingest.kafka_io import DeadLetterProducer
from ingest.online import OnlineTableSink
from tests.fixtures_kafka import KafkaBroker

pytestmark = pytest.mark.kafka


def _records(topic: str, partition: int, offsets: range) -> list[ConsumerRecord]:
    now_ms = int(time.time() * 1000)
    return [ConsumerRecord(topic, partition, -1, offset, now_ms, 0, b"k",
                           events.encode((offset, 1, 1, 1, 1, 1_509_960_088_000 + offset, 0),
                                         f"e{offset}"), [], None, 1, 100, 0)
            for offset in offsets]


def test_online_writes_skip_offsets_already_stored(kafka_broker: KafkaBroker, topic: str,
                                                   tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'store'}"
    init_store(url, "demo_db", "talkingdata", "demo")

    def sink() -> OnlineTableSink:
        return OnlineTableSink(url, "demo_db", "talkingdata", topic, "group",
                               DeadLetterProducer(kafka_broker.bootstrap_servers, topic))

    first, second = sink(), sink()
    assert first.process(_records(topic, 0, range(0, 100))) == {0: 100}
    # the second member holds overlapping records polled before the partition moved
    second.process(_records(topic, 0, range(50, 150)))
    first.close()
    second.close()
    conn = features.connect_embedded(url, "demo_db")
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    ips = Counter(row[0] for row in cursor.execute("SELECT ip FROM talkingdata").fetchall())
    assert ips == Counter(range(150))
    assert conn.store.stored_offsets("group", topic) == {0: 150}


def test_archive_commits_skip_offsets_already_archived(tmp_path: Path) -> None:
    first, second = LakeSink(tmp_path, "clicks"), LakeSink(tmp_path, "clicks")
    first.process(_records("clicks", 2, range(0, 80)))
    second.process(_records("clicks", 2, range(40, 120)))
    assert first.flush() == {2: 80}
    assert second.flush() == {2: 120}
    second.process(_records("clicks", 2, range(100, 110)))  # all archived already
    assert second.flush() == {2: 110}
    archived: Counter[int] = Counter()
    for path in archived_files(tmp_path, "clicks"):
        archived.update(pq.read_table(path).column("ip").to_pylist())
    assert archived == Counter(range(120))


def test_refetched_records_in_one_batch_are_written_once(kafka_broker: KafkaBroker,
                                                         topic: str, tmp_path: Path) -> None:
    """A rebalance inside one poll batch seeks back: the batch holds some offsets twice."""
    url = f"embedded://{tmp_path / 'store'}"
    init_store(url, "demo_db", "talkingdata", "demo")
    sink = OnlineTableSink(url, "demo_db", "talkingdata", topic, "group",
                           DeadLetterProducer(kafka_broker.bootstrap_servers, topic))
    batch = _records(topic, 1, range(0, 30)) + _records(topic, 1, range(10, 40))
    assert sink.process(batch) == {1: 40}
    sink.close()
    lake = LakeSink(tmp_path / "lake", topic)
    lake.process(_records(topic, 1, range(0, 30)))
    lake.process(_records(topic, 1, range(10, 40)))
    lake.flush()
    conn = features.connect_embedded(url, "demo_db")
    cursor = conn.cursor()
    cursor.execute("SET @@execute_mode='online'")
    online = Counter(row[0] for row in cursor.execute("SELECT ip FROM talkingdata").fetchall())
    archived: Counter[int] = Counter()
    for path in archived_files(tmp_path / "lake", topic):
        archived.update(pq.read_table(path).column("ip").to_pylist())
    assert online == archived == Counter(range(40))
