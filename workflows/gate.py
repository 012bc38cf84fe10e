"""Step `validate`: the gate between a trained candidate and production.

Both models are scored on the window's holdout, and each rule is checked in this order:
  auc_floor                    the candidate's AUC reaches the floor
  operating_point              the holdout has enough installs to choose the candidate's
                               threshold for the install-loss target
  auc_vs_production            AUC trails production's by at most max_auc_drop
  pr_auc_vs_production         PR-AUC (average precision) trails by at most max_pr_auc_drop
  blocked_vs_production        at the same install loss (each model's threshold chosen on this
                               holdout for the target), the candidate blocks at most
                               max_blocked_drop fewer of the clicks than production
The candidate passes when no rule fails; the decision records every rule's result, and the
first that failed is the one that decided. A production model computed on other feature SQL
cannot be scored on this holdout; then only the candidate's own rules apply (a note says so).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from core.config import Settings, WorkflowSettings
from core.registry import LABEL, ModelVersion, OperatingPoint, Registry
from workflows.evaluation import Metrics, choose_operating_point, evaluate
from workflows.layout import Layout, read_json, write_json
from workflows.plots import write_report
from workflows.training import load_model, predict
from workflows.window import Window

log = logging.getLogger(__name__)

PASS = "pass"
REJECT = "reject"
ALL_PASSED = "all checks passed"


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    detail: str


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
    checks: list[dict[str, Any]] = field(default_factory=list)  # every rule, in order
    max_install_loss: float | None = None
    max_pr_auc_drop: float | None = None
    max_blocked_drop: float | None = None
    # Each model's operating point for the target on this holdout (OperatingPoint.to_dict)
    candidate_operating_point: dict[str, Any] | None = None
    production_operating_point: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def outcome(self) -> str:
        return PASS if self.passed else REJECT

    @property
    def decided_by(self) -> str:
        """The rule that rejected the candidate (the first that failed), or ALL_PASSED."""
        return next((c["rule"] for c in self.checks if not c["passed"]), ALL_PASSED)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome, "decided_by": self.decided_by}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        return cls(**{k: v for k, v in data.items() if k not in ("outcome", "decided_by")})


def validate(settings: Settings, layout: Layout, window: Window,
             workflow: WorkflowSettings) -> GateDecision:
    registry = Registry(settings.model_dir)
    candidate = registry.get(read_json(layout.candidate(window.id), "train")["version"])
    holdout = pd.read_parquet(layout.holdout(window.id))
    labels = holdout[LABEL]
    scores = {"candidate": _scores(candidate, holdout)}
    candidate_metrics = evaluate(labels, scores["candidate"])
    points = {"candidate": choose_operating_point(labels, scores["candidate"],
                                                  workflow.max_install_loss)}
    checks = [_auc_floor(candidate_metrics, workflow.auc_floor),
              _has_operating_point(points["candidate"])]
    notes: list[str] = []

    production = registry.production()
    production_metrics: Metrics | None = None
    if production is None:
        notes.append("no production model yet: only the candidate's own rules apply")
    elif production.metadata.get("sql_hash") != candidate.metadata["sql_hash"]:
        notes.append(f"production {production.version} was trained on other feature SQL: "
                     "it cannot be scored on this holdout, only the candidate's own rules "
                     "apply")
    else:
        scores["production"] = _scores(production, holdout)
        production_metrics = evaluate(labels, scores["production"])
        points["production"] = choose_operating_point(labels, scores["production"],
                                                      workflow.max_install_loss)
        checks += _against_production(candidate_metrics, production_metrics,
                                      points["candidate"], points["production"],
                                      production.version, workflow)

    decision = GateDecision(
        window=window.id,
        candidate_version=candidate.version,
        candidate_metrics=candidate_metrics.to_dict(),
        production_version=production.version if production else None,
        production_metrics=production_metrics.to_dict() if production_metrics else None,
        auc_floor=workflow.auc_floor, max_auc_drop=workflow.max_auc_drop,
        reasons=[check.detail for check in checks if not check.passed], notes=notes,
        checks=[asdict(check) for check in checks],
        max_install_loss=workflow.max_install_loss, max_pr_auc_drop=workflow.max_pr_auc_drop,
        max_blocked_drop=workflow.max_blocked_drop,
        candidate_operating_point=points["candidate"].to_dict(),
        production_operating_point=points["production"].to_dict()
        if "production" in points else None)
    write_report(layout.work(window.id) / "gate", labels, scores,
                 candidate.metadata.get("feature_importance_gain", {}),
                 {name: point for name, point in points.items() if point.threshold is not None})
    write_json(layout.gate(window.id), decision.to_dict())
    log.info("gate %s (%s): %s", decision.outcome, decision.decided_by,
             "; ".join(decision.reasons + notes) or ALL_PASSED)
    return decision


def _auc_floor(metrics: Metrics, floor: float) -> Check:
    if metrics.auc is None:
        return Check("auc_floor", False, f"the holdout ({metrics.rows} rows) has "
                                         f"{metrics.positives} attributed clicks: AUC is "
                                         "undefined")
    if metrics.auc < floor:
        return Check("auc_floor", False, f"candidate AUC {metrics.auc:.4f} is below the floor "
                                         f"{floor:.4f}")
    return Check("auc_floor", True, f"candidate AUC {metrics.auc:.4f} reaches the floor "
                                    f"{floor:.4f}")


def _has_operating_point(point: OperatingPoint) -> Check:
    if point.threshold is None:
        return Check("operating_point", False, f"no operating point for the candidate: "
                                               f"{point.refusal}")
    return Check("operating_point", True, f"candidate: {point.sentence()}")


def _against_production(candidate: Metrics, production: Metrics, candidate_point: OperatingPoint,
                        production_point: OperatingPoint, production_version: str,
                        workflow: WorkflowSettings) -> list[Check]:
    checks = []
    for rule, label, ours, theirs, drop in (
            ("auc_vs_production", "AUC", candidate.auc, production.auc, workflow.max_auc_drop),
            ("pr_auc_vs_production", "PR-AUC", candidate.pr_auc, production.pr_auc,
             workflow.max_pr_auc_drop)):
        if ours is None or theirs is None:
            continue  # one class only: auc_floor has failed already
        if ours < theirs - drop:
            checks.append(Check(rule, False, f"candidate {label} {ours:.4f} is worse than "
                                             f"production {production_version}'s {theirs:.4f} "
                                             f"on the same holdout by more than {drop:.4f}"))
        else:
            checks.append(Check(rule, True, f"candidate {label} {ours:.4f}, production "
                                            f"{production_version}'s {theirs:.4f} on the same "
                                            f"holdout: within the allowed drop of {drop:.4f}"))
    ours_blocked, theirs_blocked = candidate_point.blocked_share, production_point.blocked_share
    if ours_blocked is not None and theirs_blocked is not None:
        shortfall = theirs_blocked - ours_blocked
        ok = shortfall <= workflow.max_blocked_drop
        checks.append(Check(
            "blocked_vs_production", ok,
            f"losing at most {workflow.max_install_loss:.1%} of the holdout's installs, the "
            f"candidate blocks {ours_blocked:.1%} of its clicks and production "
            f"{production_version} {theirs_blocked:.1%}: "
            + (f"within the allowed shortfall of {workflow.max_blocked_drop:.1%}" if ok else
               f"{shortfall:.1%} fewer, more than the allowed shortfall of "
               f"{workflow.max_blocked_drop:.1%}")))
    return checks


def read_decision(layout: Layout, window: Window) -> GateDecision:
    return GateDecision.from_dict(read_json(layout.gate(window.id), "validate"))


def _scores(version: ModelVersion, holdout: pd.DataFrame) -> Any:
    return predict(load_model(version), holdout, version.metadata["feature_names"])
