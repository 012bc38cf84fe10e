"""Settings of the local DolphinScheduler server, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.exceptions import ConfigError

#: The repository root: the schema's default path is relative to it.
REPO = Path(__file__).resolve().parents[2]
#: DolphinScheduler's own H2 schema, which no published jar holds (its 3.1.1 source release
#: has it at dolphinscheduler-dao/src/main/resources/sql/dolphinscheduler_h2.sql).
DEFAULT_SCHEMA = REPO.parent / "shared" / "dolphinscheduler" / "dolphinscheduler_h2.sql"

ENV_VARS: dict[str, str] = {
    "schema": "FRAUDFLOW_DS_SCHEMA",
    "libs": "FRAUDFLOW_DS_LIBS",
    "rest_port": "FRAUDFLOW_DS_REST_PORT",
    "gateway_port": "FRAUDFLOW_DS_GATEWAY_PORT",
    "heap_mb": "FRAUDFLOW_DS_HEAP_MB",
}


@dataclass(frozen=True)
class ServerSettings:
    """Where the schema and jars are, and the two ports clients use (REST and gateway)."""

    schema: Path = DEFAULT_SCHEMA
    libs: Path | None = None  # None: the machine's cache (server.libs_dir)
    rest_port: int = 12345
    gateway_port: int = 25333
    heap_mb: int = 1536

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in ("schema", "libs"):
            if env.get(ENV_VARS[name]):
                values[name] = Path(env[ENV_VARS[name]])
        for name in ("rest_port", "gateway_port", "heap_mb"):
            raw = env.get(ENV_VARS[name], "").strip()
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ConfigError(f"{ENV_VARS[name]} must be an integer, got {raw!r}") \
                        from None
        return cls(**values)  # type: ignore[arg-type]
