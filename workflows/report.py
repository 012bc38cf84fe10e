"""Step `report`: explain a rejected candidate and count it for alerting.

Writes `rejection.md` (the rule that decided and every rule's result, both models' metrics and
operating points on the same holdout, the comparison plots) next to the window's gate
decision; production is left as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Settings
from core.registry import OperatingPoint
from workflows.alerting import REJECTED, record_outcome
from workflows.gate import GateDecision, read_decision
from workflows.layout import Layout
from workflows.window import Window

_METRICS = ("auc", "pr_auc", "logloss", "rows", "positives")
_POINT = ("threshold", "blocked_share", "install_loss")


def report_rejection(settings: Settings, layout: Layout, window: Window) -> str:
    decision = read_decision(layout, window)
    if decision.passed:
        return f"candidate {decision.candidate_version} passed the gate: nothing to report"
    path = layout.rejection(window.id)
    path.write_text(_markdown(decision, layout.work(window.id) / "gate"))
    record_outcome(layout, settings.model_dir, REJECTED,
                   f"{window.id}/{decision.candidate_version}", decision.candidate_metrics["auc"])
    return (f"rejected {decision.candidate_version} by rule {decision.decided_by}: "
            f"{'; '.join(decision.reasons)} (report {path})")


def _markdown(decision: GateDecision, plots: Path) -> str:
    production = decision.production_version or "none"
    points = {name: OperatingPoint.from_dict(stored) for name, stored in (
        ("candidate", decision.candidate_operating_point),
        ("production", decision.production_operating_point)) if stored is not None}
    lines = [
        f"# Candidate {decision.candidate_version} rejected (window ending {decision.window})",
        "",
        f"Production stays {production}. Decided by the rule `{decision.decided_by}`.",
        "",
        "## Why",
        *[f"- {reason}" for reason in decision.reasons],
        *[f"- note: {note}" for note in decision.notes],
        "",
        "## Every rule",
        "",
        "| rule | result | detail |",
        "|---|---|---|",
        *[f"| {check['rule']} | {'pass' if check['passed'] else 'FAIL'} | {check['detail']} |"
          for check in decision.checks],
        "",
        f"Gate: AUC floor {decision.auc_floor}, allowed drop from production: AUC "
        f"{decision.max_auc_drop}, PR-AUC {decision.max_pr_auc_drop}, share of clicks blocked "
        f"{decision.max_blocked_drop}; install-loss target {decision.max_install_loss}.",
        "",
        "## Metrics on the window's holdout",
        "",
        "| metric | candidate | production |",
        "|---|---|---|",
        *[f"| {name} | {_cell(decision.candidate_metrics, name)} | "
          f"{_cell(decision.production_metrics, name)} |" for name in _METRICS],
        *[f"| {name} | {_cell(decision.candidate_operating_point, name)} | "
          f"{_cell(decision.production_operating_point, name)} |" for name in _POINT],
        "",
        "## Operating points on the window's holdout",
        "",
        *[f"- {name}: {point.sentence()}" for name, point in points.items()],
        "",
        *[f"![{png.stem}]({png})" for png in sorted(plots.glob("*.png"))],
        "",
    ]
    return "\n".join(lines)


def _cell(metrics: dict[str, Any] | None, name: str) -> str:
    if metrics is None or metrics.get(name) is None:
        return "–"
    value = metrics[name]
    return f"{value:.4g}" if isinstance(value, float) else str(value)
