"""Pytest plugin: a real DolphinScheduler 3.1.1 standalone server for the session.

Started once per session (on first use) on free ports, with its home in the session's tmp dir;
its jars are fetched once into the machine's cache shared across sessions and CI runs
(``~/.cache/fraudflow/dolphinscheduler-3.1.1``, or ``$FRAUDFLOW_DS_LIBS``). Its tasks see
FRAUDFLOW_ADMIN_TOKEN = the serving tests' admin token, as an operator's worker would have the
real one. Without DolphinScheduler's H2
schema (``$FRAUDFLOW_DS_SCHEMA``, default ``../shared/dolphinscheduler/``) the tests that need
the server are skipped with the one line saying what is missing (they fail instead under
``FRAUDFLOW_TEST_REQUIRE_DOLPHINSCHEDULER=1``, as CI runs them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from components.dolphinscheduler import server
from components.dolphinscheduler.config import ServerSettings
from components.exceptions import DolphinSchedulerError
from core.config import WorkflowSettings
from tests.serving_helpers import ADMIN_TOKEN

REPO = Path(__file__).resolve().parent.parent
# C1 only: the JIT's second tier costs more CPU at start-up than a test session gains back.
TEST_JVM_OPTS = ("-XX:TieredStopAtLevel=1",)
REQUIRE_ENV = "FRAUDFLOW_TEST_REQUIRE_DOLPHINSCHEDULER"


@dataclass(frozen=True)
class DolphinScheduler:
    """The session's server."""

    info: server.ServerInfo

    @property
    def rest_url(self) -> str:
        return self.info.rest_url

    @property
    def gateway_port(self) -> int:
        return self.info.ports.gateway

    def env(self) -> dict[str, str]:
        """The variables that point `fraudflow workflow submit` at this server."""
        return {"PYDS_JAVA_GATEWAY_ADDRESS": server.HOST,
                "PYDS_JAVA_GATEWAY_PORT": str(self.gateway_port),
                "FRAUDFLOW_DS_REST_URL": self.rest_url}

    def workflow_settings(self, **overrides: object) -> WorkflowSettings:
        return replace(WorkflowSettings.from_env(self.env()), **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def dolphinscheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DolphinScheduler]:
    """A running DolphinScheduler server for the whole session, stopped at the end."""
    settings = ServerSettings.from_env()
    try:
        server.check_schema(settings.schema)
    except DolphinSchedulerError as exc:
        if os.environ.get(REQUIRE_ENV) == "1":  # CI: a missing schema is a failure
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    var_dir = tmp_path_factory.mktemp("dolphinscheduler")
    watchdog = _stop_when_gone(os.getpid(), var_dir)
    try:
        # Jars may need fetching on a fresh machine: that is not counted in start()'s timeout.
        info = server.start(var_dir, settings, timeout=240, free_ports=True,
                            jvm_opts=TEST_JVM_OPTS,
                            extra_env={"FRAUDFLOW_ADMIN_TOKEN": ADMIN_TOKEN})
        print(f"\nDolphinScheduler {server.VERSION} ready in {info.startup_seconds:.1f}s, "
              f"RSS {(info.rss_bytes or 0) / 2**20:.0f} MiB")
        yield DolphinScheduler(info)
    finally:
        server.stop(var_dir)
        watchdog.terminate()
        watchdog.wait()


def _stop_when_gone(pid: int, var_dir: Path) -> subprocess.Popen[bytes]:
    """Stop the server should this pytest process die without teardown (SIGKILL, CI timeout):
    the detached JVM would otherwise hold 0.8 GB and a dozen ports."""
    stop = "import sys; from components.dolphinscheduler.server import stop; stop(sys.argv[1])"
    script = 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; shift; exec "$@"'
    return subprocess.Popen(["sh", "-c", script, "sh", str(pid), sys.executable, "-c", stop,
                             str(var_dir)],
                            cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
