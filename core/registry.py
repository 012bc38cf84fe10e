"""The model registry: a folder of immutable model versions and a pointer to production.

Layout (`FRAUDFLOW_MODEL_DIR`):
    versions/<version>/model.txt        LightGBM text format
    versions/<version>/metadata.json    feature names in order, SQL hash, data window, metrics,
                                        the operating point (threshold) chosen on the holdout…
    versions/<version>/report/*.png     plots of the training report (optional)
    production.json                     {"version": …, "history": [{version, promoted_at}, …]}

Writers (the workflow) create a version directory atomically (temp dir + rename) and switch
production.json atomically (temp file + rename), so readers (predict servers) never see a half
written model or pointer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.utils import floatToGoString

from core.exceptions import RegistryError

LABEL = "is_attributed"
#: Feature columns LightGBM treats as categories (ids, and the hour of day).
CATEGORICAL_FEATURES = ("app", "device", "os", "channel", "hour")
#: Bounds of the predict server's score histogram; the holdout's score CDF is kept on the same
#: bounds so the score-shift alert can compare live scores with it.
SCORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path  # the version directory

    @property
    def model_file(self) -> Path:
        return self.path / "model.txt"

    @property
    def metadata(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "metadata.json").read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"model {self.version}: unreadable metadata.json: {exc}") from None


def sql_hash(sql: str) -> str:
    """A stable hash of feature SQL (whitespace-insensitive), stored with each model."""
    return hashlib.sha256(" ".join(sql.split()).encode()).hexdigest()[:16]


def holdout_score_cdf(scores: npt.NDArray[np.float64]) -> dict[str, float]:
    """The fraction of holdout scores <= each bound of `SCORE_BUCKETS` (and +Inf), keyed by
    `le` as the predict server exposes its histogram."""
    bounds = [*SCORE_BUCKETS, math.inf]
    at_or_below = np.searchsorted(np.sort(scores), bounds, side="right")
    return {floatToGoString(bound): int(count) / len(scores)
            for bound, count in zip(bounds, at_or_below, strict=True)}


@dataclass(frozen=True)
class OperatingPoint:
    """Where a model's score (P(install)) becomes a decision, chosen on its holdout for a
    business target: block the clicks scored below `threshold`, as many as possible while
    losing at most `max_install_loss` of the real installs. The holdout counts say how sure
    the estimate is. `threshold` is None when the holdout had too few installs to honour the
    target; `refusal` then says why, and no click counts as blocked."""

    max_install_loss: float
    threshold: float | None
    holdout_clicks: int
    holdout_installs: int
    blocked_clicks: int
    lost_installs: int
    refusal: str | None = None

    @property
    def blocked_share(self) -> float | None:
        """The share of the holdout's clicks blocked (None when refused)."""
        if self.threshold is None or not self.holdout_clicks:
            return None
        return self.blocked_clicks / self.holdout_clicks

    @property
    def install_loss(self) -> float | None:
        """The share of the holdout's installs among the blocked clicks (None when refused)."""
        if self.threshold is None or not self.holdout_installs:
            return None
        return self.lost_installs / self.holdout_installs

    def sentence(self) -> str:
        """What the point means for an advertiser, in one sentence."""
        if self.threshold is None:
            return f"No operating point: {self.refusal}."
        return (f"Blocking clicks scored below {self.threshold:.4g} blocks "
                f"{self.blocked_share:.1%} of the holdout's clicks ({self.blocked_clicks:,} of "
                f"{self.holdout_clicks:,}) and loses {self.install_loss:.1%} of its installs "
                f"({self.lost_installs} of {self.holdout_installs}; target at most "
                f"{self.max_install_loss:.1%}).")

    def to_dict(self) -> dict[str, Any]:
        return {"max_install_loss": self.max_install_loss, "threshold": self.threshold,
                "blocked_share": self.blocked_share, "install_loss": self.install_loss,
                "holdout_clicks": self.holdout_clicks,
                "holdout_installs": self.holdout_installs,
                "blocked_clicks": self.blocked_clicks, "lost_installs": self.lost_installs,
                "refusal": self.refusal}

    @classmethod
    def from_dict(cls, data: Any) -> OperatingPoint:
        """Read `to_dict`'s output back; ValueError says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"is not an object: {data!r}")
        counts = {}
        for name in ("holdout_clicks", "holdout_installs", "blocked_clicks", "lost_installs"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} {value!r} is not a count")
            counts[name] = value
        threshold, loss = data.get("threshold"), data.get("max_install_loss")
        for name, value in (("threshold", threshold), ("max_install_loss", loss)):
            if value is not None and not (isinstance(value, int | float)
                                          and not isinstance(value, bool) and 0 <= value <= 1):
                raise ValueError(f"{name} {value!r} is not a probability")
        if loss is None:
            raise ValueError("max_install_loss is missing")
        refusal = data.get("refusal")
        if threshold is None and not isinstance(refusal, str):
            raise ValueError("has no threshold and no refusal saying why")
        return cls(max_install_loss=float(loss),
                   threshold=None if threshold is None else float(threshold),
                   refusal=refusal if isinstance(refusal, str) else None, **counts)


def model_metadata(feature_names: Sequence[str], feature_sql: str, *, database: str,
                   deployment: str, table: str, operating_point: OperatingPoint | None = None,
                   **training: Any) -> dict[str, Any]:
    """The metadata.json of a model version: what serving needs to use the model (features in
    order, the SQL they come from, where to request them, the operating point it decides
    at), plus what training measured (`training` keys such as metrics, score_cdf,
    data_window; absent for imported models). Training, tests and benchmarks all write
    metadata through this one function."""
    names = list(feature_names)
    return {"feature_names": names,
            "categorical_features": [c for c in CATEGORICAL_FEATURES if c in names],
            "label": LABEL, "sql_hash": sql_hash(feature_sql), "database": database,
            "deployment": deployment, "table": table,
            **({"operating_point": operating_point.to_dict()} if operating_point else {}),
            **{key: value for key, value in training.items() if value is not None}}


def operating_point_of(metadata: Mapping[str, Any]) -> OperatingPoint | None:
    """The operating point stored in a model's metadata; None for models trained before
    training chose one. RegistryError when it is there but malformed."""
    stored = metadata.get("operating_point")
    if stored is None:
        return None
    try:
        return OperatingPoint.from_dict(stored)
    except ValueError as exc:
        raise RegistryError(f"metadata operating_point {exc}") from None


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def _versions(self) -> Path:
        return self.root / "versions"

    @property
    def _pointer(self) -> Path:
        return self.root / "production.json"

    def save(self, model_text: str, metadata: Mapping[str, Any],
             report_dir: Path | None = None) -> ModelVersion:
        """Store a new candidate version; returns it (not yet in production)."""
        created = datetime.now(UTC)
        digest = hashlib.sha256(model_text.encode()).hexdigest()[:8]
        version = f"{created:%Y%m%dT%H%M%S}Z-{digest}"
        self._versions.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self._versions))
        (staging / "model.txt").write_text(model_text)
        full = {**metadata, "version": version, "created_at": created.isoformat()}
        (staging / "metadata.json").write_text(json.dumps(full, indent=2, sort_keys=True))
        if report_dir is not None and report_dir.exists():
            shutil.copytree(report_dir, staging / "report")
        final = self._versions / version
        if final.exists():  # the same model text saved twice within a second
            version = f"{version}-{staging.name.rsplit('.', 1)[-1]}"
            final = self._versions / version
            full["version"] = version
            (staging / "metadata.json").write_text(json.dumps(full, indent=2, sort_keys=True))
        os.rename(staging, final)
        return ModelVersion(version, final)

    def get(self, version: str) -> ModelVersion:
        path = self._versions / version
        if not (path / "model.txt").exists():
            raise RegistryError(f"no model version {version!r} in {self._versions}")
        return ModelVersion(version, path)

    def versions(self) -> list[ModelVersion]:
        if not self._versions.exists():
            return []
        return [ModelVersion(p.name, p) for p in sorted(self._versions.iterdir())
                if not p.name.startswith(".") and (p / "model.txt").exists()]

    def _read_pointer(self) -> dict[str, Any]:
        try:
            return json.loads(self._pointer.read_text())
        except FileNotFoundError:
            return {"version": None, "history": []}
        except ValueError as exc:
            raise RegistryError(f"{self._pointer} is corrupt: {exc}") from None

    def production(self) -> ModelVersion | None:
        version = self._read_pointer().get("version")
        return self.get(version) if version else None

    def history(self) -> list[dict[str, Any]]:
        return list(self._read_pointer().get("history", []))

    def promote(self, version: str) -> ModelVersion:
        """Make `version` the production model (atomic pointer switch; promotions from
        several processes are serialized so none loses another's history entry)."""
        model = self.get(version)
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".promote.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._switch_pointer(version)
        return model

    def _switch_pointer(self, version: str) -> None:
        pointer = self._read_pointer()
        history = pointer.get("history", [])
        history.append({"version": version, "promoted_at": datetime.now(UTC).isoformat()})
        fd, temp = tempfile.mkstemp(prefix=".production.", dir=self.root)
        with os.fdopen(fd, "w") as handle:
            json.dump({"version": version, "history": history}, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self._pointer)
