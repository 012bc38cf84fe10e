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
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from components.dolphinscheduler import server
from components.dolphinscheduler.config import ServerSettings
from components.exceptions import DolphinSchedulerError
from core.config import WorkflowSettings
from tests.component_watchdog import stop_when_gone
from tests.serving_helpers import ADMIN_TOKEN

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
    watchdog = stop_when_gone(os.getpid(), var_dir, "components.dolphinscheduler.server")
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
