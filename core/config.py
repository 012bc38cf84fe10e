"""Typed, frozen configuration, read once from the environment; CLI flags override fields."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.exceptions import ConfigError

#: The real TalkingData samples shipped in the repository (see data/talkingdata/SOURCE.md).
SAMPLE_DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "talkingdata"
#: Largest record batch the local broker accepts and clients send; 1 MB values need headroom.
KAFKA_MESSAGE_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Every setting FraudFlow reads; the env var names are in `ENV_VARS` and the README."""

    store_url: str = "embedded://var/store"
    kafka_bootstrap_servers: str = "localhost:9092"
    topic: str = "clicks"
    var_dir: Path = Path("var")
    lake_dir: Path = Path("var/lake")
    model_dir: Path = Path("var/models")
    database: str = "demo_db"
    table: str = "talkingdata"
    deployment: str = "demo"
    port: int = 8881
    ingest_metrics_port: int = 9101
    archive_metrics_port: int = 9102
    admin_token: str | None = None
    # The score below which /predict calls a click fraud, for every model; unset: each model
    # decides at its own operating point (chosen in training on its holdout).
    predict_threshold: float | None = None
    # Where offline SELECT / INTO OUTFILE run on an embedded store: FraudFlow's engine
    # (embedded) or OpenMLDB's own batch engine on Spark (spark, needs the [spark] extra).
    offline_executor: str = "embedded"
    spark_master: str = "local[*]"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_VARS[field.name])
            if raw is None or raw == "":
                continue
            values[field.name] = _convert(field.name, raw)
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> Settings:
        """Return a copy with the given fields replaced; `None` values (unset flags) are ignored."""
        given = {k: _convert(k, v) if isinstance(v, str) else v
                 for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given)  # type: ignore[arg-type]


ENV_VARS: dict[str, str] = {
    "store_url": "FRAUDFLOW_STORE_URL",
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "topic": "FRAUDFLOW_TOPIC",
    "var_dir": "FRAUDFLOW_VAR_DIR",
    "lake_dir": "FRAUDFLOW_LAKE_DIR",
    "model_dir": "FRAUDFLOW_MODEL_DIR",
    "database": "FRAUDFLOW_DATABASE",
    "table": "FRAUDFLOW_TABLE",
    "deployment": "FRAUDFLOW_DEPLOYMENT",
    "port": "FRAUDFLOW_PORT",
    "ingest_metrics_port": "FRAUDFLOW_INGEST_METRICS_PORT",
    "archive_metrics_port": "FRAUDFLOW_ARCHIVE_METRICS_PORT",
    "admin_token": "FRAUDFLOW_ADMIN_TOKEN",
    "predict_threshold": "FRAUDFLOW_PREDICT_THRESHOLD",
    "offline_executor": "FRAUDFLOW_OFFLINE_EXECUTOR",
    "spark_master": "FRAUDFLOW_SPARK_MASTER",
}
_CHOICES: dict[str, tuple[str, ...]] = {"offline_executor": ("embedded", "spark")}


def _convert(name: str, raw: str) -> object:
    kind = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{ENV_VARS[name]} must be an integer, got {raw!r}") from None
    if kind == "Path":
        return Path(raw)
    if kind == "float | None":  # a probability
        problem = ConfigError(f"{ENV_VARS[name]} must be a probability in [0, 1], got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise problem from None
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise problem
        return value
    if name in _CHOICES and raw not in _CHOICES[name]:
        raise ConfigError(f"{ENV_VARS[name]} must be one of {', '.join(_CHOICES[name])}, "
                          f"got {raw!r}")
    return raw


_loaded: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use (not at import)."""
    global _loaded
    if _loaded is None:
        _loaded = Settings.from_env()
    return _loaded
