"""Pytest plugin: a real Kafka broker for the session, plus fresh topics and group ids.

The broker is started once per session on free ports, with its data in the session's tmp dir;
its jars are fetched once into a cache shared across sessions (``<repo>/var/kafka/libs``, or
``$FRAUDFLOW_KAFKA_LIBS``). With ``FRAUDFLOW_TEST_EXTERNAL_KAFKA=1`` the broker at
``$KAFKA_BOOTSTRAP_SERVERS`` is used instead (and tests that restart the broker are skipped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from components.kafka import broker
from core.ports import free_port
from tests.component_watchdog import stop_when_gone

REPO = Path(__file__).resolve().parent.parent
TOPIC_PARTITIONS = 4
# C1 only: the JIT's second tier costs more CPU at startup than a short test session gains.
TEST_JVM_OPTS = ("-XX:TieredStopAtLevel=1",)


@dataclass
class KafkaBroker:
    """The session's broker; `var_dir` is None for an external one."""

    bootstrap_servers: str
    var_dir: Path | None
    port: int = 0
    controller_port: int = 0
    libs: Path | None = None

    @property
    def external(self) -> bool:
        return self.var_dir is None

    def start(self) -> broker.BrokerInfo:
        """Start it again on the same ports and data (a no-op if it runs)."""
        return broker.start(self.local_var_dir(), port=self.port,
                            controller_port=self.controller_port, libs=self.libs,
                            jvm_opts=TEST_JVM_OPTS)

    def stop(self) -> None:
        broker.stop(self.local_var_dir())

    def restart(self) -> broker.BrokerInfo:
        """Stop it and start it again on the same data; clients have to reconnect."""
        self.stop()
        return self.start()

    def admin(self) -> KafkaAdminClient:
        """A new admin client; the caller closes it."""
        return KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                client_id="fraudflow-tests")

    def local_var_dir(self) -> Path:
        """The var dir of a broker this session started; skips the test for an external one."""
        if self.var_dir is None:
            pytest.skip("needs a broker this session started (FRAUDFLOW_TEST_EXTERNAL_KAFKA=1)")
        return self.var_dir


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running Kafka broker for the whole session, stopped at the end."""
    if os.environ.get("FRAUDFLOW_TEST_EXTERNAL_KAFKA") == "1":
        servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            pytest.fail("FRAUDFLOW_TEST_EXTERNAL_KAFKA=1 needs KAFKA_BOOTSTRAP_SERVERS")
        yield KafkaBroker(bootstrap_servers=servers, var_dir=None)
        return

    libs = Path(os.environ.get(broker.LIBS_ENV) or REPO / "var" / "kafka" / "libs")
    var_dir = tmp_path_factory.mktemp("kafka")
    port = free_port()
    controller_port = free_port()
    while controller_port == port:  # two binds to port 0 may, rarely, get the same answer
        controller_port = free_port()
    kafka = KafkaBroker(bootstrap_servers=f"{broker.HOST}:{port}", var_dir=var_dir, port=port,
                        controller_port=controller_port, libs=libs)
    watchdog = stop_when_gone(os.getpid(), var_dir, "components.kafka.broker")
    try:
        # Jars may need fetching on a fresh machine: that is not counted in start()'s timeout.
        kafka.start()
        yield kafka
    finally:
        broker.stop(var_dir)
        watchdog.terminate()
        watchdog.wait()


@pytest.fixture
def topic(kafka_broker: KafkaBroker) -> str:
    """A new topic with a random name and 4 partitions, ready to produce to."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = kafka_broker.admin()
    try:
        admin.create_topics([NewTopic(name, num_partitions=TOPIC_PARTITIONS,
                                      replication_factor=1)])
        # Creation is acknowledged before every partition has a leader; wait for that too.
        admin.wait_for_topics([name], timeout_ms=15000)
    finally:
        admin.close()
    return name


@pytest.fixture
def group_id() -> str:
    """A random consumer-group name, so tests never share committed offsets."""
    return f"test-group-{uuid.uuid4().hex[:12]}"
