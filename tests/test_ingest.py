"""Streaming ingestion against the real Kafka broker: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer, KafkaProducer

import features
from core import events
from core.config import SAMPLE_DATA_DIR
from ingest import producer
from ingest.archive import archived_files
from tests.fixtures_kafka import KafkaBroker

pytestmark = pytest.mark.kafka
SAMPLE = SAMPLE_DATA_DIR / "train_sample.csv"


@dataclass
class Pipeline:
    """The environment of one test's consumer processes."""

    broker: KafkaBroker
    topic: str
    root: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                "FRAUDFLOW_STORE_URL": f"embedded://{self.root / 'store'}",
                "FRAUDFLOW_LAKE_DIR": str(self.root / "lake"),
                "FRAUDFLOW_VAR_DIR": str(self.root / "var")}

    def start(self, command: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{command}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraudflow", command, "--topic", self.topic,
             "--metrics-port", "0", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def run(self, command: str, *args: str, timeout: float = 120) -> None:
        proc = self.start(command, "--until-idle", "1.5", *args)
        assert proc.wait(timeout=timeout) == 0, (self.root / f"{command}.log").read_text()

    def online_rows(self) -> Counter[tuple[int, ...]]:
        conn = features.connect(f"embedded://{self.root / 'store'}", "demo_db")
        cursor = conn.cursor()
        cursor.execute("SET @@execute_mode='online'")
        rows = cursor.execute("SELECT * FROM talkingdata").fetchall()
        conn.close()
        return Counter(tuple(r) for r in rows)

    def archived_rows(self) -> Counter[tuple[int, ...]]:
        rows: Counter[tuple[int, ...]] = Counter()
        for path in archived_files(self.root / "lake", self.topic):
            table = pq.read_table(path)
            rows.update(zip(*(table.column(c).to_pylist() for c in events.TABLE_COLUMNS),
                            strict=True))
        return rows


@pytest.fixture
def pipeline(kafka_broker: KafkaBroker, topic: str, tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(kafka_broker, topic, tmp_path)
    yield pipe
    for proc in pipe.processes:  # a failed test leaves no consumer behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _synthetic(count: int, seed: int) -> list[tuple[int, ...]]:
    return [tuple(r) for chunk in producer.synthetic_rows(count, seed) for r in chunk.tolist()]


def _produce(pipe: Pipeline, count: int, seed: int, rate: float | None = None) -> None:
    stats = producer.produce(producer.synthetic_rows(count, seed),
                             pipe.broker.bootstrap_servers, pipe.topic, "test", rate=rate,
                             progress=False)
    assert stats.acknowledged == count


def test_produce_n_gives_exactly_n_online_and_archived(pipeline: Pipeline) -> None:
    stats = producer.produce(producer.file_rows(SAMPLE), pipeline.broker.bootstrap_servers,
                             pipeline.topic, "sample", progress=False)
    assert stats.acknowledged == stats.sent == 10_000
    pipeline.run("ingest")
    pipeline.run("archive", "--flush-seconds", "1")
    expected = Counter(tuple(r) for r in next(producer.file_rows(SAMPLE)).tolist())
    assert pipeline.online_rows() == expected
    assert pipeline.archived_rows() == expected
    # a second run over the same group has nothing left to do
    pipeline.run("ingest")
    pipeline.run("archive")
    assert pipeline.online_rows() == expected
    assert pipeline.archived_rows() == expected


def _wait_for_assignment(pipe: Pipeline, name: str, seen_before: int) -> None:
    """Until the newest process of `name` has partitions (so a kill lands mid-stream)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = (pipe.root / f"{name}.log").read_text()
        if len(re.findall(r"partitions assigned: \[\d", log)) > seen_before:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} got no partitions: {log[-2000:]}")


def test_kill_9_mid_stream_loses_and_doubles_nothing(pipeline: Pipeline) -> None:
    count = 40_000
    rng = random.Random(7)
    feeder = subprocess.Popen(
        [sys.executable, "-m", "fraudflow", "produce", "--synthetic", str(count), "--seed", "3",
         "--topic", pipeline.topic, "--rate", "4000", "--no-progress"],
        env=pipeline.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # small batches and flushes, so kills land between and inside writes
    args = {"ingest": ("--batch-size", "500"), "archive": ("--flush-seconds", "0.3")}
    for round_ in range(3):
        for name in ("ingest", "archive"):
            proc = pipeline.start(name, *args[name])
            _wait_for_assignment(pipeline, name, round_)
            time.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert feeder.wait(timeout=60) == 0
    pipeline.run("ingest")
    pipeline.run("archive", "--flush-seconds", "1")
    expected = Counter(_synthetic(count, 3))
    assert pipeline.online_rows() == expected
    assert pipeline.archived_rows() == expected


def test_broker_restart_mid_stream_loses_nothing(pipeline: Pipeline) -> None:
    pipeline.broker.local_var_dir()  # skips for an external broker
    _produce(pipeline, 5_000, seed=11)
    ingest = pipeline.start("ingest")
    archive = pipeline.start("archive", "--flush-seconds", "0.5")
    for name in ("ingest", "archive"):  # mid-stream, not mid-import (a busy machine is slow)
        _wait_for_assignment(pipeline, name, 0)
    pipeline.broker.restart()
    _produce(pipeline, 5_000, seed=12)
    for name, proc in (("ingest", ingest), ("archive", archive)):
        proc.send_signal(signal.SIGTERM)  # graceful: finish the batch, commit, leave
        assert proc.wait(timeout=60) == 0, (pipeline.root / f"{name}.log").read_text()
    pipeline.run("ingest")
    pipeline.run("archive", "--flush-seconds", "1")
    expected = Counter(_synthetic(5_000, 11) + _synthetic(5_000, 12))
    assert pipeline.online_rows() == expected
    assert pipeline.archived_rows() == expected


def _malformed() -> Iterator[tuple[bytes | None, str]]:
    good = orjson.loads(events.encode((1, 2, 3, 4, 5, 1509949941000, 0), "x"))
    yield b"not json at all", "not_json"
    yield b"[1, 2, 3]", "not_object"
    yield orjson.dumps({**good, "ip": "1"}), "wrong_type"
    yield orjson.dumps({k: v for k, v in good.items() if k != "channel"}), "missing_field"
    yield orjson.dumps({**good, "app": -3}), "out_of_range"
    yield orjson.dumps({**good, "click_time": 1509949941}), "out_of_range"  # seconds, not ms
    yield orjson.dumps({**good, "click_time": 99999999999999999}), "out_of_range"
    yield orjson.dumps({**good, "pad": "x" * 1_000_000}), "too_large"
    yield orjson.dumps({**good, "schema_version": 2}), "schema_version"
    yield orjson.dumps({**good, "is_attributed": 5}), "wrong_type"
    yield None, "empty"


def test_malformed_messages_go_to_the_dead_letter_topic(pipeline: Pipeline) -> None:
    good_rows = _synthetic(2_000, seed=5)
    bad = list(_malformed())
    kafka = KafkaProducer(bootstrap_servers=pipeline.broker.bootstrap_servers, acks="all",
                          max_request_size=4 << 20)
    positions = sorted(random.Random(1).sample(range(len(good_rows)), len(bad)))
    bad_at = dict(zip(positions, bad, strict=True))
    for i, row in enumerate(good_rows):
        if i in bad_at:
            kafka.send(pipeline.topic, key=b"bad", value=bad_at[i][0])
        # a foreign producer: no key, no schema_version, no event_id, string timestamp
        value = events.encode(row, f"g{i}") if i % 2 else orjson.dumps(
            {**dict(zip(events.TABLE_COLUMNS, row, strict=True)), "click_time": row[5]})
        kafka.send(pipeline.topic, key=None if i % 3 == 0 else b"k", value=value)
    kafka.flush()
    kafka.close()
    pipeline.run("ingest")
    assert pipeline.online_rows() == Counter(good_rows)
    dlq = KafkaConsumer(f"{pipeline.topic}.dlq",
                        bootstrap_servers=pipeline.broker.bootstrap_servers,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000,
                        max_partition_fetch_bytes=4 << 20)
    letters = list(dlq)
    dlq.close()
    reasons = Counter(dict(m.headers)["reason"].decode() for m in letters)
    assert reasons == Counter(reason for _, reason in bad)
    for message in letters:
        headers = dict(message.headers)
        assert headers["source.topic"].decode() == pipeline.topic
        assert int(headers["source.offset"].decode()) >= 0
        assert headers["detail"]


def test_two_consumers_in_one_group_split_the_partitions(pipeline: Pipeline) -> None:
    _produce(pipeline, 20_000, seed=21)
    first = pipeline.start("ingest", "--until-idle", "3", "--batch-size", "1000")
    second = pipeline.start("ingest", "--until-idle", "3", "--batch-size", "1000")
    for proc in (first, second):
        assert proc.wait(timeout=120) == 0, (pipeline.root / "ingest.log").read_text()
    log = (pipeline.root / "ingest.log").read_text()
    assert log.count("partitions assigned") >= 2
    assert pipeline.online_rows() == Counter(_synthetic(20_000, 21))


def test_a_catalog_error_stops_ingest_with_one_line_instead_of_retrying(
        pipeline: Pipeline) -> None:
    """A missing table is no reason to retry forever: the consumer stops, naming the cause."""
    _produce(pipeline, 500, seed=21)
    proc = pipeline.start("ingest", "--until-idle", "30")
    _wait_for_assignment(pipeline, "ingest", 0)  # after start-up's init_store
    conn = features.connect(f"embedded://{pipeline.root / 'store'}", "demo_db")
    try:
        conn.cursor().execute("DROP DEPLOYMENT demo")
        conn.cursor().execute("DROP TABLE talkingdata")
    finally:
        conn.close()
    _produce(pipeline, 10, seed=23)
    assert proc.wait(timeout=60) == 2
    log = (pipeline.root / "ingest.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "online table talkingdata" in errors[0], log[-3000:]
    assert "Traceback" not in log and "retrying" not in log
