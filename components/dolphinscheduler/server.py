"""A DolphinScheduler 3.1.1 standalone server that FraudFlow runs itself.

One JVM holds master, worker, API (REST on ``rest_port``, context ``/dolphinscheduler``),
alert server, the Python gateway (``gateway_port``) and an embedded ZooKeeper; the database is
an in-memory H2 created from DolphinScheduler's own schema, so a restart forgets every
definition (submit again). Everything lives under ``<var_dir>/dolphinscheduler/``: ``conf/``
(written from ``conf/`` beside this module on every start, first on the classpath),
``logs/`` (the server's log and one log per task instance), ``data/`` (task working dirs),
``ports.json``, ``server.pid`` and ``server.out`` (the JVM's console, where crashes end up).
The jars come from Maven Central through ``pom.xml`` beside this module, into
``$FRAUDFLOW_DS_LIBS`` or ``~/.cache/fraudflow/dolphinscheduler-3.1.1`` (see `libs_dir`).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

import requests

from components.dolphinscheduler.config import ENV_VARS, ServerSettings
from components.dolphinscheduler.rest import DolphinSchedulerRest, RestError
from components.exceptions import DolphinSchedulerError
from components.maven import cache_root, fetch_once
from components.process import (
    HOST,
    accepts,
    file_size,
    java,
    kill,
    launch,
    locked,
    log_tail,
    port_free,
    rss_bytes,
    running_pid,
    wait_until_ready,
)
from core.ports import free_port

log = logging.getLogger(__name__)

VERSION = "3.1.1"
CONTEXT_PATH = "/dolphinscheduler"
_HERE = Path(__file__).parent
_POM = _HERE / "pom.xml"
_TEMPLATES = _HERE / "conf"
_MAIN_CLASS = "org.apache.dolphinscheduler.StandaloneServer"
_WHAT = "the DolphinScheduler server"
_FAILED_MARK = "Application run failed"
# DolphinScheduler's usual ports, taken when free (else any free port).
_DEFAULT_PORTS = {"master_port": 5678, "worker_port": 1234, "alert_port": 50052,
                  "python_callback_port": 25334}


@dataclass(frozen=True)
class Ports:
    rest: int
    gateway: int
    master: int
    worker: int
    alert: int
    python_callback: int


@dataclass(frozen=True)
class ServerStatus:
    """A server process found running for a var dir."""

    pid: int
    ports: Ports
    var_dir: Path
    answering: bool  # False while it is still starting (or hung)

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.ports.rest}{CONTEXT_PATH}"

    @property
    def swagger_url(self) -> str:
        return f"{self.rest_url}/swagger-ui/index.html"

    @property
    def log_path(self) -> Path:
        return home_dir(self.var_dir) / "logs" / "dolphinscheduler.log"

    @property
    def rss_bytes(self) -> int | None:
        return rss_bytes(self.pid)


@dataclass(frozen=True)
class ServerInfo(ServerStatus):
    """What `start` left running."""

    already_running: bool = False
    startup_seconds: float = 0.0  # from launch (or from the call) to ready


def home_dir(var_dir: Path) -> Path:
    """The server's home: ``<var_dir>/dolphinscheduler``."""
    return Path(var_dir) / "dolphinscheduler"


def libs_dir(settings: ServerSettings) -> Path:
    """The jar cache (absolute: the JVM runs in the server's home): $FRAUDFLOW_DS_LIBS, else
    one per machine, shared by every var dir, worktree, test session and CI run."""
    libs = settings.libs if settings.libs is not None else \
        cache_root() / f"dolphinscheduler-{VERSION}"
    return libs.absolute()


def check_schema(schema: Path) -> Path:
    """The schema file, or one line saying what is missing and where it comes from."""
    if not schema.is_file():
        raise DolphinSchedulerError(
            f"DolphinScheduler's H2 schema {schema} is missing (set {ENV_VARS['schema']}): "
            "it is dolphinscheduler-dao/src/main/resources/sql/dolphinscheduler_h2.sql of "
            f"the DolphinScheduler {VERSION} source release; no Maven jar ships it")
    return schema.resolve()


def ensure_jars(settings: ServerSettings) -> Path:
    """Fetch the server's jars with Maven unless already there; return the jar directory."""
    parents = sorted((_HERE / "maven-repo").rglob("*.pom"))
    libs = libs_dir(settings)
    return fetch_once(_POM, libs, ["dependency:copy-dependencies", f"-DoutputDirectory={libs}",
                                   "-DincludeScope=runtime"],
                      f"the DolphinScheduler {VERSION} jars", DolphinSchedulerError,
                      stamp_inputs=parents)


def status(var_dir: Path) -> ServerStatus | None:
    """The server running for `var_dir`, or None (a stale pid file is removed)."""
    home = home_dir(Path(var_dir).resolve())
    pid = running_pid(home / "server.pid", _markers(home))
    if pid is None:
        return None
    ports = _read_ports(home)
    return ServerStatus(pid=pid, ports=ports, var_dir=home.parent, answering=_ready(ports))


def start(var_dir: Path, settings: ServerSettings | None = None, timeout: float = 180, *,
          free_ports: bool = False, jvm_opts: tuple[str, ...] = (),
          extra_env: Mapping[str, str] | None = None) -> ServerInfo:
    """Start the server for `var_dir` (or return the one already running) once it is ready:
    REST health UP, the gateway accepting, a master and a worker registered.

    `free_ports` picks free ports for everything (tests); else the settings' REST and gateway
    ports and DolphinScheduler's usual ones. `timeout` bounds the wait after launch (fetching
    the jars on first use is not counted). Tasks run in the server's environment: this
    process's plus `extra_env` (e.g. FRAUDFLOW_ADMIN_TOKEN, which the submitted workflow does
    not carry). Raises DolphinSchedulerError, with the tail of the server's logs, if it exits
    or is not ready in time.
    """
    settings = settings or ServerSettings.from_env()
    var_dir = Path(var_dir).resolve()
    home = home_dir(var_dir)
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / ".start.lock"):
        began = time.monotonic()
        current = status(var_dir)
        if current is not None:
            if not current.answering:  # launched moments ago by someone else: wait for it
                _wait_ready(current.pid, current.ports, home, timeout, 0)
            return ServerInfo(pid=current.pid, ports=current.ports, var_dir=current.var_dir,
                              answering=True, already_running=True,
                              startup_seconds=time.monotonic() - began)

        schema = check_schema(settings.schema)
        ports = _choose_ports(settings, free_ports)
        java_bin = java(_WHAT, DolphinSchedulerError)
        jars = ensure_jars(settings)
        conf = _write_conf(home, ports, schema, java_bin)
        (home / "ports.json").write_text(json.dumps(asdict(ports)) + "\n")
        log_offset = file_size(home / "logs" / "dolphinscheduler.log")
        launched = time.monotonic()
        argv = [*_jvm_args(java_bin, home, conf, jars, settings.heap_mb), *jvm_opts,
                _MAIN_CLASS]
        pid = launch(argv, home, home / "server.out", _WHAT, DolphinSchedulerError, extra_env)
        (home / "server.pid").write_text(f"{pid}\n")
        try:
            _wait_ready(pid, ports, home, timeout, log_offset)
        except DolphinSchedulerError:
            kill(pid, 10, _WHAT, DolphinSchedulerError)  # a half-started one holds the ports
            (home / "server.pid").unlink(missing_ok=True)
            raise
        took = time.monotonic() - launched
        log.info("DolphinScheduler %s up on %s:%d (pid %d) in %.1fs", VERSION, HOST, ports.rest,
                 pid, took)
        return ServerInfo(pid=pid, ports=ports, var_dir=var_dir, answering=True,
                          startup_seconds=took)


def stop(var_dir: Path, timeout: float = 30) -> bool:
    """Stop the server for `var_dir`: SIGTERM, then SIGKILL after `timeout` seconds.
    Returns False when none was running. The in-memory database goes with it."""
    home = home_dir(Path(var_dir).resolve())
    pid = running_pid(home / "server.pid", _markers(home))
    if pid is None:
        return False
    kill(pid, timeout, _WHAT, DolphinSchedulerError)
    (home / "server.pid").unlink(missing_ok=True)
    return True


def os_user() -> str:
    """The user the server runs tasks as (sudo is off): the tenant a workflow must name."""
    return getpass.getuser()


# --- configuration ---------------------------------------------------------------------------

def _choose_ports(settings: ServerSettings, free_ports: bool) -> Ports:
    if free_ports:
        chosen: list[int] = []
        while len(chosen) < 6:  # two binds to port 0 may, rarely, get the same answer
            port = free_port()
            if port not in chosen:
                chosen.append(port)
        return Ports(*chosen)
    wanted = {"rest_port": settings.rest_port, "gateway_port": settings.gateway_port}
    for name, port in wanted.items():
        if not port_free(port):
            variable = ENV_VARS[name]
            raise DolphinSchedulerError(f"DolphinScheduler {name.replace('_', ' ')} {port} is "
                                        f"already in use by another process (set {variable})")
    others = {name: port if port_free(port) else free_port()
              for name, port in _DEFAULT_PORTS.items()}
    return Ports(rest=settings.rest_port, gateway=settings.gateway_port,
                 master=others["master_port"], worker=others["worker_port"],
                 alert=others["alert_port"], python_callback=others["python_callback_port"])


def _write_conf(home: Path, ports: Ports, schema: Path, java_bin: str) -> Path:
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    java_home = Path(java_bin).resolve().parent.parent
    values = {
        "schema": str(schema), "rest_port": ports.rest, "gateway_port": ports.gateway,
        "master_port": ports.master, "worker_port": ports.worker, "alert_port": ports.alert,
        "python_callback_port": ports.python_callback,
        # A single-node scheduler must not stop dispatching because the machine is busy.
        "max_cpu_load_avg": max(64, 8 * (os.cpu_count() or 1)),
        "log_dir": str(home / "logs"), "java_home": str(java_home),
        # The Shell tasks call `fraudflow`: this interpreter's scripts come first on PATH.
        "python": sys.executable,
        "path": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    for template in _TEMPLATES.iterdir():
        text = Template(template.read_text()).substitute(values)
        (conf / template.name).write_text(text)
    return conf


def _jvm_args(java_bin: str, home: Path, conf: Path, jars: Path, heap_mb: int) -> list[str]:
    (home / "data").mkdir(exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    return [java_bin, "-Xms512m", f"-Xmx{heap_mb}m", "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            # The worker reads each task process's pid by reflection (to kill it on a stop):
            # Java 17 refuses that unless java.lang is opened to it.
            "--add-opens", "java.base/java.lang=ALL-UNNAMED",
            "-Dfile.encoding=UTF-8", f"-Djava.io.tmpdir={home / 'tmp'}",
            # sudo off: tasks run as this user, whatever tenant the workflow names.
            "-Dsudo.enable=false", f"-Ddata.basedir.path={home / 'data'}",
            f"-Ddolphinscheduler.env.path={conf / 'dolphinscheduler_env.sh'}",
            "-Dresource.storage.type=NONE",
            f"-Dlogging.config={conf / 'logback-spring.xml'}",
            f"-Dspring.config.location={conf / 'application.yaml'}",
            "-cp", f"{conf}:{jars / '*'}"]


def _read_ports(home: Path) -> Ports:
    try:
        return Ports(**json.loads((home / "ports.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        raise DolphinSchedulerError(f"{home / 'ports.json'} is missing or unreadable: stop "
                                    "the server and start it again") from None


# --- health ----------------------------------------------------------------------------------

def _markers(home: Path) -> tuple[str, str]:
    return _MAIN_CLASS, f"-Ddata.basedir.path={home / 'data'}"


def _healthy(ports: Ports) -> bool:
    if not (accepts(ports.rest) and accepts(ports.gateway)):
        return False
    try:
        reply = requests.get(f"http://{HOST}:{ports.rest}{CONTEXT_PATH}/actuator/health",
                             timeout=5)
        return reply.status_code == 200 and reply.json().get("status") == "UP"
    except (requests.RequestException, ValueError):
        return False


def _ready(ports: Ports) -> bool:
    """REST healthy, the gateway accepting, and a master and a worker registered (the API
    refuses to start a workflow before that)."""
    if not _healthy(ports):
        return False
    try:
        with DolphinSchedulerRest(f"http://{HOST}:{ports.rest}{CONTEXT_PATH}",
                                  timeout=5) as rest:
            return bool(rest.get("/monitor/masters")) and bool(rest.get("/monitor/workers"))
    except RestError:
        return False


def _wait_ready(pid: int, ports: Ports, home: Path, timeout: float, log_offset: int) -> None:
    logs = [(home / "server.out", 0), (home / "logs" / "dolphinscheduler.log", log_offset)]
    wait_until_ready(lambda: _ready(ports), pid, _markers(home), timeout, _WHAT,
                     DolphinSchedulerError, lambda: log_tail(logs), poll=0.5,
                     failed=lambda: _start_failed(logs))


def _start_failed(logs: list[tuple[Path, int]]) -> bool:
    """Whether Spring gave up: the JVM then lingers (the embedded ZooKeeper's threads) but
    will never serve."""
    return any(_FAILED_MARK in tail for tail in (log_tail([entry], 200) for entry in logs))
