"""BatchConsumer against the real broker: batching by sink readiness, a rebalance during short
polls, offset commits, and a broker that goes away while the consumer polls."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition

from ingest.kafka_io import BatchConsumer, BatchPolicy
from tests.fixtures_kafka import KafkaBroker

pytestmark = pytest.mark.kafka


def _produce(broker: KafkaBroker, topic: str, count: int, start: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    for i in range(start, start + count):
        producer.send(topic, key=str(i % 7).encode(), value=str(i).encode())
    producer.flush()
    producer.close()


def _poll_values(consumer: BatchConsumer, count: int, timeout_s: float = 60,
                 ready: bool = False) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        values += [r.value for r in consumer.poll_batch(lambda: ready)]
    return values


def test_a_held_batch_goes_out_as_soon_as_the_sink_is_ready(kafka_broker: KafkaBroker,
                                                           topic: str, group_id: str) -> None:
    _produce(kafka_broker, topic, 200)
    policy = BatchPolicy(max_records=10_000, max_latency_s=5.0)
    consumer = BatchConsumer(kafka_broker.bootstrap_servers, topic, group_id, policy)
    try:
        # a sink that is never ready: the batch is held until max_latency
        started = time.monotonic()
        held = _poll_values(consumer, 1, ready=False)
        assert time.monotonic() - started >= policy.max_latency_s
        _produce(kafka_broker, topic, 200, start=200)
        # a ready sink takes what has arrived at once, long before max_latency
        started = time.monotonic()
        batch = consumer.poll_batch(lambda: True)
        while not batch and time.monotonic() - started < policy.max_latency_s:
            batch = consumer.poll_batch(lambda: True)
        assert batch
        assert time.monotonic() - started < policy.max_latency_s / 2
        values = held + [r.value for r in batch]
        values += _poll_values(consumer, 400 - len(values), ready=True)
        assert sorted(values, key=int) == [str(i).encode() for i in range(400)]
    finally:
        consumer.close()


def test_a_member_polling_briefly_through_its_rebalance_gets_its_partitions_back(
        kafka_broker: KafkaBroker) -> None:
    """kafka-python 3.0.12 left the partitions revoked for good when a poll timed out in the
    middle of the join that follows every new member's first metadata update (see
    ingest/kafka_compat.py); a held batch polls every few ms. It showed within 1-2 tries."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        for _ in range(4):
            topic = f"rejoin-{uuid.uuid4().hex[:8]}"
            admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
            _produce(kafka_broker, topic, 200)
            consumer = BatchConsumer(kafka_broker.bootstrap_servers, topic, f"g-{topic}",
                                     BatchPolicy(max_records=10_000, max_latency_s=2.0))
            try:
                values = _poll_values(consumer, 200, timeout_s=20)  # held: 5 ms polls
                _produce(kafka_broker, topic, 200, start=200)
                values += _poll_values(consumer, 400 - len(values), timeout_s=20, ready=True)
                assert sorted(values, key=int) == [str(i).encode() for i in range(400)]
            finally:
                consumer.close()
    finally:
        admin.close()


def test_commits_reach_the_group_even_when_sent_in_the_background(
        kafka_broker: KafkaBroker, topic: str, group_id: str) -> None:
    _produce(kafka_broker, topic, 50)
    consumer = BatchConsumer(kafka_broker.bootstrap_servers, topic, group_id)
    try:
        assert len(_poll_values(consumer, 50)) == 50
        assigned = sorted(tp.partition for tp in consumer.consumer.assignment())
        consumer.commit({p: 3 for p in assigned})  # in the background
        consumer.commit({assigned[0]: 5}, wait=True)  # waits for the earlier ones too
    finally:
        consumer.close()
    reader = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers, group_id=group_id,
                           enable_auto_commit=False)
    committed = {p: reader.committed(TopicPartition(topic, p)) for p in assigned}
    reader.close()
    assert committed == {p: 5 if p == assigned[0] else 3 for p in assigned}


def test_polling_survives_the_broker_going_away(kafka_broker: KafkaBroker, topic: str,
                                               group_id: str) -> None:
    kafka_broker.local_var_dir()  # skips for an external broker
    _produce(kafka_broker, topic, 100)
    consumer = BatchConsumer(kafka_broker.bootstrap_servers, topic, group_id,
                             BatchPolicy(max_records=1000, max_latency_s=0.02))
    try:
        assert len(_poll_values(consumer, 100)) == 100
        positions = {tp.partition: consumer.consumer.position(tp)
                     for tp in consumer.consumer.assignment()}
        consumer.commit(positions, wait=True)
        kafka_broker.stop()
        try:
            away_until = time.monotonic() + 8
            while time.monotonic() < away_until:
                # as the run loop does; neither may raise while the broker is away (kafka-python
                # raised from poll() when a coordinator lookup failed, as seen in
                # test_broker_restart_mid_stream_loses_nothing)
                consumer.commit(positions)
                assert consumer.poll_batch(lambda: True) == []
        finally:
            kafka_broker.start()
        _produce(kafka_broker, topic, 100, start=100)
        values = _poll_values(consumer, 100, ready=True)
        assert sorted(values, key=int) == [str(i).encode() for i in range(100, 200)]
    finally:
        consumer.close()
