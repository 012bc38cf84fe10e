"""The local Kafka broker (ingest/broker.py) against a real JVM, driven with kafka-python."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from components.cli import default_port, kafka
from components.exceptions import BrokerError
from components.kafka import broker
from core.ports import free_port
from tests.fixtures_kafka import KafkaBroker

MB = 1024 * 1024


def _produce(servers: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", max_request_size=2 * MB)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def _consume(servers: str, topic: str, group_id: str, count: int,
             timeout: float = 30) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(topic, bootstrap_servers=servers, group_id=group_id,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_partition_fetch_bytes=2 * MB)
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.mark.kafka
def test_status_reports_the_running_broker(kafka_broker: KafkaBroker) -> None:
    found = broker.status(kafka_broker.local_var_dir())
    assert found is not None
    assert found.answering
    assert found.bootstrap_servers == kafka_broker.bootstrap_servers
    assert found.controller_port == kafka_broker.controller_port
    assert (broker.kafka_dir(kafka_broker.local_var_dir()) / "broker.pid").read_text().strip() \
        == str(found.pid)


@pytest.mark.kafka
def test_round_trip_keeps_keys_and_values(kafka_broker: KafkaBroker, topic: str,
                                          group_id: str) -> None:
    # The 1 MB value is above Kafka's 1 MB default message.max.bytes: the broker must take it.
    messages = [(b"ip-1", b"click"), (b"ip-2", b""), (b"ip-3", os.urandom(MB))]
    _produce(kafka_broker.bootstrap_servers, topic, messages)

    records = _consume(kafka_broker.bootstrap_servers, topic, group_id, len(messages))

    assert sorted((r.key, r.value) for r in records) == sorted(messages)


@pytest.mark.kafka
def test_start_is_idempotent(kafka_broker: KafkaBroker) -> None:
    running = broker.status(kafka_broker.local_var_dir())
    assert running is not None

    again = kafka_broker.start()

    assert again.already_running
    assert again.pid == running.pid


@pytest.mark.kafka
def test_start_refuses_another_port_while_running(kafka_broker: KafkaBroker) -> None:
    with pytest.raises(BrokerError, match="already runs on port"):
        broker.start(kafka_broker.local_var_dir(), port=kafka_broker.port + 7)


@pytest.mark.kafka
def test_stop_then_start_keeps_topic_data(kafka_broker: KafkaBroker, topic: str,
                                          group_id: str) -> None:
    var_dir = kafka_broker.local_var_dir()
    messages = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    _produce(kafka_broker.bootstrap_servers, topic, messages)
    before = broker.status(var_dir)
    assert before is not None

    assert broker.stop(var_dir) is True
    assert broker.status(var_dir) is None
    assert broker.stop(var_dir) is False  # stopping a stopped broker is fine
    info = kafka_broker.start()

    assert not info.already_running
    assert info.pid != before.pid
    records = _consume(kafka_broker.bootstrap_servers, topic, group_id, len(messages))
    assert sorted((r.key, r.value) for r in records) == sorted(messages)


@pytest.mark.kafka
def test_failed_start_raises_with_the_broker_output(kafka_broker: KafkaBroker,
                                                    tmp_path: Path) -> None:
    kafka_broker.local_var_dir()  # jars come from the session's cache
    with pytest.raises(BrokerError, match="exited while starting") as caught:
        broker.start(tmp_path, port=free_port(), heap_mb=1, libs=kafka_broker.libs)

    assert "Too small maximum heap" in str(caught.value)
    assert broker.status(tmp_path) is None


@pytest.mark.kafka
def test_cli_status_of_running_broker(kafka_broker: KafkaBroker) -> None:
    result = CliRunner().invoke(
        kafka, ["status", "--var-dir", str(kafka_broker.local_var_dir())])

    assert result.exit_code == 0, result.output
    assert f"running at {kafka_broker.bootstrap_servers}" in result.output


def test_cli_status_when_not_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(kafka, ["status", "--var-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "not running" in result.output


def test_start_rejects_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((broker.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"{port} is already in use"):
            broker.start(tmp_path, port=port)


def test_stale_pid_file_is_ignored_and_removed(tmp_path: Path) -> None:
    pid_file = broker.kafka_dir(tmp_path) / "broker.pid"
    pid_file.parent.mkdir(parents=True)
    for pid in (os.getpid(), _dead_pid()):  # a live non-broker process, then a gone one
        pid_file.write_text(f"{pid}\n")
        assert broker.status(tmp_path) is None
        assert not pid_file.exists()
    assert broker.stop(tmp_path) is False


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(("servers", "port"), [
    ("localhost:19092", 19092),
    ("127.0.0.1:9999", 9999),
    ("broker.example:9093", 9092),  # not local: the broker cannot be ours
    ("localhost:9092,localhost:9093", 9092),
])
def test_default_port_comes_from_local_bootstrap_servers(servers: str, port: int) -> None:
    assert default_port(servers) == port
