"""A single-node Apache Kafka broker (KRaft, combined broker+controller) that FraudFlow runs itself.

Everything lives under ``<var_dir>/kafka/``: ``libs/`` (jars fetched from Maven Central
through ``pom.xml`` beside this module), ``data/`` (topic logs and KRaft metadata),
``server.properties`` (rewritten on every start), ``broker.pid``, ``broker.log`` (Kafka's log4j2
log) and ``broker.out`` (the JVM's own stdout/stderr, where crashes such as a bad ``-Xmx`` end
up).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from components.exceptions import BrokerError
from components.maven import fetch_once
from components.process import (
    HOST,
    accepts,
    file_size,
    java,
    kill,
    last_lines,
    launch,
    locked,
    log_tail,
    port_free,
    read_text,
    running_pid,
    wait_until_ready,
)
from core.config import KAFKA_MESSAGE_MAX_BYTES
from core.ports import free_port

log = logging.getLogger(__name__)

#: Env var naming a jar directory shared by several var dirs (e.g. test sessions).
LIBS_ENV = "FRAUDFLOW_KAFKA_LIBS"

_NODE_ID = 1
_POM = Path(__file__).with_name("pom.xml")
_LOG4J = Path(__file__).with_name("log4j2.properties")
_MAIN_CLASS = "kafka.Kafka"
_CDS_PENDING = "class-archive.pending"
_LISTENER_RE = re.compile(r"^listeners=PLAINTEXT://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)\s*$", re.M)


@dataclass(frozen=True)
class BrokerStatus:
    """A broker process found running for a var dir."""

    pid: int
    port: int
    controller_port: int
    var_dir: Path
    answering: bool  # False while it is still starting (or hung)

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return kafka_dir(self.var_dir) / "broker.log"


@dataclass(frozen=True)
class BrokerInfo(BrokerStatus):
    """What `start` left running."""

    already_running: bool = False  # start() found it up and launched nothing
    startup_seconds: float = 0.0  # from launch (or from the call, if already running) to answering


def kafka_dir(var_dir: Path) -> Path:
    """The broker's home: ``<var_dir>/kafka``."""
    return Path(var_dir) / "kafka"


def libs_dir(var_dir: Path) -> Path:
    """Where the jars live: ``$FRAUDFLOW_KAFKA_LIBS`` if set, else ``<var_dir>/kafka/libs``."""
    override = os.environ.get(LIBS_ENV)
    return Path(override) if override else kafka_dir(var_dir) / "libs"


def ensure_jars(var_dir: Path, libs: Path | None = None) -> Path:
    """Fetch the Kafka jars with Maven unless already there; return the jar directory."""
    libs = Path(libs) if libs is not None else libs_dir(var_dir)
    return fetch_once(_POM, libs, ["dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
                      "the Kafka jars", BrokerError)


def status(var_dir: Path) -> BrokerStatus | None:
    """The broker running for `var_dir`, or None (a stale pid file is removed)."""
    home = kafka_dir(Path(var_dir).resolve())
    pid = _running_pid(home)
    if pid is None:
        return None
    port, controller_port = _read_ports(home / "server.properties")
    return BrokerStatus(pid=pid, port=port, controller_port=controller_port,
                        var_dir=home.parent, answering=_answers(port))


def start(var_dir: Path, port: int = 9092, controller_port: int | None = None,
          heap_mb: int = 512, timeout: float = 60, *, libs: Path | None = None,
          jvm_opts: Sequence[str] = ()) -> BrokerInfo:
    """Start the broker for `var_dir` (or return the one already running) once it answers.

    `controller_port` defaults to port+1 when free. `timeout` bounds the wait for the broker to
    answer after launch; fetching the jars on first use is not counted. `libs` overrides the jar
    directory (see `libs_dir`); `jvm_opts` are extra JVM flags. Raises BrokerError, with the
    tail of the broker's log, if it exits or does not answer in time.
    """
    var_dir = Path(var_dir).resolve()  # the JVM gets absolute paths; status matches on them
    home = kafka_dir(var_dir)
    home.mkdir(parents=True, exist_ok=True)
    # One starter per var dir, so two concurrent calls cannot launch two JVMs on one data dir.
    with locked(home / ".start.lock"):
        began = time.monotonic()
        current = status(var_dir)
        if current is not None:
            if current.port != port or controller_port not in (None, current.controller_port):
                raise BrokerError(f"a Kafka broker for {var_dir} already runs on port "
                                  f"{current.port} (pid {current.pid}); stop it to use port {port}")
            if not current.answering:  # launched moments ago by someone else: wait for it
                _wait_until_answering(current.pid, port, home, began + timeout, timeout)
            return BrokerInfo(pid=current.pid, port=port, controller_port=current.controller_port,
                              var_dir=var_dir, answering=True, already_running=True,
                              startup_seconds=time.monotonic() - began)

        if controller_port is None:
            controller_port = port + 1 if port_free(port + 1) else free_port()
        _check_ports(port, controller_port)
        java = _java()
        jars = ensure_jars(var_dir, libs)
        props = _write_properties(home, port, controller_port)
        _format_storage(java, jars, home, props)

        _settle_class_archive(home, keep=True)  # the last run may have exited without stop()
        log_offset = file_size(home / "broker.log")  # errors quote this run's lines only
        launched = time.monotonic()
        argv = [*_jvm_args(java, jars, home, heap_mb), *_class_sharing_args(java, jars, home),
                *jvm_opts, _MAIN_CLASS, str(props)]
        pid = _launch(argv, home)
        (home / "broker.pid").write_text(f"{pid}\n")
        try:
            _wait_until_answering(pid, port, home, launched + timeout, timeout, log_offset)
        except BrokerError:
            _kill(pid, grace=5)  # a half-started broker would hold the ports and the data dir
            (home / "broker.pid").unlink(missing_ok=True)
            _settle_class_archive(home, keep=False)  # it saw too few classes to be worth it
            raise
        took = time.monotonic() - launched
        log.info("Kafka broker up on %s:%d (pid %d) in %.1fs", HOST, port, pid, took)
        return BrokerInfo(pid=pid, port=port, controller_port=controller_port, var_dir=var_dir,
                          answering=True, startup_seconds=took)


def stop(var_dir: Path, timeout: float = 30) -> bool:
    """Stop the broker for `var_dir`: SIGTERM, then SIGKILL after `timeout` seconds.

    Returns False when none was running. Topic data stays in ``<var_dir>/kafka/data``.
    """
    home = kafka_dir(Path(var_dir).resolve())
    pid = _running_pid(home)
    if pid is None:
        return False
    _kill(pid, grace=timeout)
    (home / "broker.pid").unlink(missing_ok=True)
    _settle_class_archive(home, keep=True)
    return True


# --- launching -------------------------------------------------------------------------------

def _java() -> str:
    return java("the Kafka broker", BrokerError)


def _jvm_args(java: str, jars: Path, home: Path, heap_mb: int) -> list[str]:
    return [java, f"-Xmx{heap_mb}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            # Die rather than limp on: a dead broker is noticed, a thrashing one times tests out.
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={home}", f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp", str(jars / "*")]


def _class_sharing_args(java: str, jars: Path, home: Path | None) -> list[str]:
    """JVM flags for an AppCDS archive of the broker's classes, kept beside the jars.

    Mapping pre-parsed classes instead of loading thousands from jars halves start time. The
    first run has the JVM write the archive when it exits; `stop` then moves it in place (a
    unique temp name first, so concurrent brokers sharing the jars never see a partial file).
    A stale or missing archive is harmless: the JVM then loads classes the usual way. With
    `home` None (one-off tools) an archive is used if there is one, never recorded.
    """
    real_java = Path(java).resolve()
    jvm_tag = hashlib.sha256(f"{real_java}:{real_java.stat().st_mtime_ns}".encode()).hexdigest()
    archive = jars / f".broker-{jvm_tag[:12]}.jsa"
    quiet = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]  # its warnings would fill broker.out
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}", *quiet]
    if home is None:
        return []
    part = archive.with_name(f"{archive.name}.{uuid.uuid4().hex[:8]}.part")
    (home / _CDS_PENDING).write_text(f"{part}\n{archive}\n")
    return [f"-XX:ArchiveClassesAtExit={part}", *quiet]


def _settle_class_archive(home: Path, keep: bool) -> None:
    """After the broker exited: move the class archive it wrote into place, or drop it."""
    pending = home / _CDS_PENDING
    lines = (read_text(pending) or "").splitlines()
    pending.unlink(missing_ok=True)
    if len(lines) != 2:
        return
    part, archive = Path(lines[0]), Path(lines[1])
    if keep and file_size(part) > 0:
        os.replace(part, archive)
    else:
        part.unlink(missing_ok=True)


def _write_properties(home: Path, port: int, controller_port: int) -> Path:
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    settings = {
        "process.roles": "broker,controller",
        "node.id": _NODE_ID,
        "controller.quorum.voters": f"{_NODE_ID}@{HOST}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data).replace("\\", "\\\\"),
        "num.partitions": 4,
        "auto.create.topics.enable": "true",
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # Internal topics: one replica (one node); few partitions, since the first consumer
        # group or transaction creates them and 50 partitions take seconds to come up.
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "message.max.bytes": KAFKA_MESSAGE_MAX_BYTES,
        "replica.fetch.max.bytes": KAFKA_MESSAGE_MAX_BYTES,
    }
    props = home / "server.properties"
    lines = ["# Written by ingest/broker.py on every start: change that file, not this one."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    props.write_text("\n".join(lines) + "\n")
    return props


def _format_storage(java: str, jars: Path, home: Path, props: Path) -> None:
    """Format the KRaft data dir once; later starts reuse it (and its cluster id) as is."""
    if (home / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    proc = subprocess.run(
        [*_jvm_args(java, jars, home, 256), *_class_sharing_args(java, jars, None),
         "-XX:TieredStopAtLevel=1",  # a one-shot tool: optimising JIT work would be wasted
         "kafka.tools.StorageTool", "format",
         # `=`: a random id may start with "-", which argparse would take for an option
         f"--cluster-id={cluster_id}", "--config", str(props), "--ignore-formatted"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"formatting the Kafka data dir {home / 'data'} failed:\n"
                          + last_lines(proc.stdout + proc.stderr))


def _launch(argv: list[str], home: Path) -> int:
    return launch(argv, home, home / "broker.out", "the Kafka broker", BrokerError)


def _wait_until_answering(pid: int, port: int, home: Path, deadline: float, timeout: float,
                          log_offset: int = 0) -> None:
    wait_until_ready(lambda: _answers(port), pid, _markers(home),
                     max(0.0, deadline - time.monotonic()), "the Kafka broker", BrokerError,
                     lambda: _log_tail(home, log_offset))


def _answers(port: int) -> bool:
    """Whether a broker on `port` serves metadata and is registered (not fenced)."""
    if not accepts(port):  # cheap: spares kafka-python's retry loop and its log noise
        return False
    admin = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=f"{HOST}:{port}",
                                 client_id="fraudflow-broker-probe",
                                 request_timeout_ms=3000, bootstrap_timeout_ms=3000)
        brokers = admin.describe_cluster()["brokers"]
    except (KafkaError, OSError):
        return False
    finally:
        if admin is not None:
            admin.close()
    return any(not broker.get("is_fenced") for broker in brokers)


# --- processes and ports ---------------------------------------------------------------------

def _markers(home: Path) -> tuple[str, str]:
    """What the broker of `home` has on its command line (not a recycled pid, not a zombie)."""
    return _MAIN_CLASS, str(home / "server.properties")


def _running_pid(home: Path) -> int | None:
    return running_pid(home / "broker.pid", _markers(home))


def _kill(pid: int, grace: float) -> None:
    kill(pid, grace, "the Kafka broker", BrokerError)


def _check_ports(port: int, controller_port: int) -> None:
    if port == controller_port:
        raise BrokerError(f"the Kafka port and controller port must differ (both {port})")
    for name, value, flag in (("port", port, "--port or KAFKA_BOOTSTRAP_SERVERS"),
                              ("controller port", controller_port, "--controller-port")):
        if not port_free(value):
            raise BrokerError(f"Kafka {name} {HOST}:{value} is already in use by another "
                              f"process; choose another with {flag}")


def _read_ports(props: Path) -> tuple[int, int]:
    match = _LISTENER_RE.search(read_text(props) or "")
    if match is None:
        raise BrokerError(f"cannot find the listeners line in {props}")
    return int(match[1]), int(match[2])


def _log_tail(home: Path, log_offset: int = 0) -> str:
    """The JVM's console output and Kafka's log past `log_offset`, for errors."""
    return log_tail([(home / "broker.out", 0), (home / "broker.log", log_offset)])
