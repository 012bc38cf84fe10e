"""Step `validate`: the gate between a trained candidate and production.

The candidate passes when its AUC on the window's holdout reaches the floor and is not worse
than the production model's AUC on the same holdout by more than the allowed drop. A
production model computed on other feature SQL cannot be scored on this holdout; then only the
floor applies (and the decision says so).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from core.config import Settings
from core.registry import LABEL, ModelVersion, Registry
from workflows.evaluation import Metrics, evaluate
from workflows.layout import Layout, read_json, write_json
from workflows.plots import write_report
from workflows.training import load_model, predict
from workflows.window import Window

log = logging.getLogger(__name__)

PASS = "pass"
REJECT = "reject"


@dataclass(frozen=True)
class GateDecision:
    window: str
    candidate_version: str
    candidate_metrics: dict[str, Any]
    production_version: str | None
    production_metrics: dict[str, Any] | None
    auc_floor: float
    max_auc_drop: float
    reasons: list[str] = field(default_factory=list)  # why the candidate was rejected
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def outcome(self) -> str:
        return PASS if self.passed else REJECT

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        return cls(**{k: v for k, v in data.items() if k != "outcome"})


def validate(settings: Settings, layout: Layout, window: Window, auc_floor: float,
             max_auc_drop: float) -> GateDecision:
    registry = Registry(settings.model_dir)
    candidate = registry.get(read_json(layout.candidate(window.id), "train")["version"])
    holdout = pd.read_parquet(layout.holdout(window.id))
    candidate_scores = _scores(candidate, holdout)
    candidate_metrics = evaluate(holdout[LABEL], candidate_scores)
    reasons: list[str] = []
    notes: list[str] = []
    if candidate_metrics.auc is None:
        reasons.append(f"the holdout ({candidate_metrics.rows} rows) has "
                       f"{candidate_metrics.positives} attributed clicks: AUC is undefined")
    elif candidate_metrics.auc < auc_floor:
        reasons.append(f"candidate AUC {candidate_metrics.auc:.4f} is below the floor "
                       f"{auc_floor:.4f}")

    production = registry.production()
    production_metrics: Metrics | None = None
    scores = {"candidate": candidate_scores}
    if production is None:
        notes.append("no production model yet: only the AUC floor applies")
    elif production.metadata.get("sql_hash") != candidate.metadata["sql_hash"]:
        notes.append(f"production {production.version} was trained on other feature SQL: "
                     "it cannot be scored on this holdout, only the AUC floor applies")
    else:
        scores["production"] = _scores(production, holdout)
        production_metrics = evaluate(holdout[LABEL], scores["production"])
        if (candidate_metrics.auc is not None and production_metrics.auc is not None
                and candidate_metrics.auc < production_metrics.auc - max_auc_drop):
            reasons.append(
                f"candidate AUC {candidate_metrics.auc:.4f} is worse than production "
                f"{production.version}'s {production_metrics.auc:.4f} on the same holdout by "
                f"more than {max_auc_drop:.4f}")

    decision = GateDecision(
        window=window.id,
        candidate_version=candidate.version,
        candidate_metrics=candidate_metrics.to_dict(),
        production_version=production.version if production else None,
        production_metrics=production_metrics.to_dict() if production_metrics else None,
        auc_floor=auc_floor, max_auc_drop=max_auc_drop, reasons=reasons, notes=notes)
    write_report(layout.work(window.id) / "gate", holdout[LABEL], scores,
                 candidate.metadata.get("feature_importance_gain", {}))
    write_json(layout.gate(window.id), decision.to_dict())
    log.info("gate %s: %s", decision.outcome, "; ".join(reasons + notes) or "all checks passed")
    return decision


def read_decision(layout: Layout, window: Window) -> GateDecision:
    return GateDecision.from_dict(read_json(layout.gate(window.id), "validate"))


def _scores(version: ModelVersion, holdout: pd.DataFrame) -> Any:
    return predict(load_model(version), holdout, version.metadata["feature_names"])
