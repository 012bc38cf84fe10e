"""Running one task of the definition: SQL on the configured store, or a step function.

Both runners come through here: the embedded runner for each task of a run, and
`fraudflow workflow step <task>` (what DolphinScheduler's Shell tasks call).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core.config import Settings, WorkflowSettings
from workflows.definition import GATE_PARAM, SqlTask, StepTask
from workflows.exceptions import StepError
from workflows.gate import validate
from workflows.lake_import import import_new_files
from workflows.layout import Layout
from workflows.online_bootstrap import bootstrap_online
from workflows.publish import PublishTarget, publish
from workflows.report import report_rejection
from workflows.sql import render, run_script
from workflows.training import train
from workflows.window import Window


@dataclass(frozen=True)
class StepContext:
    settings: Settings
    workflow: WorkflowSettings
    layout: Layout
    window: Window


@dataclass(frozen=True)
class StepResult:
    summary: str
    outputs: dict[str, str] = field(default_factory=dict)


def _import(ctx: StepContext) -> StepResult:
    return StepResult(import_new_files(ctx.settings, ctx.layout, ctx.window).summary())


def _train(ctx: StepContext) -> StepResult:
    version, metrics, point = train(ctx.settings, ctx.layout, ctx.window,
                                    ctx.workflow.holdout_fraction, ctx.workflow.max_install_loss)
    auc = "undefined" if metrics.auc is None else f"{metrics.auc:.4f}"
    return StepResult(f"candidate {version.version}: holdout AUC {auc}, {metrics.rows} rows, "
                      f"{metrics.positives} attributed. {point.sentence()}")


def _validate(ctx: StepContext) -> StepResult:
    decision = validate(ctx.settings, ctx.layout, ctx.window, ctx.workflow)
    why = "; ".join(decision.reasons or decision.notes) or "all checks passed"
    return StepResult(f"{decision.outcome} ({decision.decided_by}): {why}",
                      {GATE_PARAM: decision.outcome})


def _load_online(ctx: StepContext) -> StepResult:
    return StepResult(bootstrap_online(ctx.settings))


def _publish(ctx: StepContext) -> StepResult:
    target = PublishTarget(ctx.workflow.predict_urls, ctx.settings.admin_token,
                           ctx.workflow.publish_retries, ctx.workflow.publish_timeout_seconds)
    return StepResult(publish(ctx.settings, ctx.layout, ctx.window, target))


def _report(ctx: StepContext) -> StepResult:
    return StepResult(report_rejection(ctx.settings, ctx.layout, ctx.window))


STEPS: dict[str, Callable[[StepContext], StepResult]] = {
    "import": _import,
    "train": _train,
    "validate": _validate,
    "load_online": _load_online,
    "publish": _publish,
    "report": _report,
}


def run_task(task: SqlTask | StepTask, ctx: StepContext, params: Mapping[str, str]) -> StepResult:
    if isinstance(task, SqlTask):
        done = run_script(ctx.settings, task.execute_mode, render(task.sql, params))
        return StepResult("; ".join(done))
    if task.name not in STEPS:
        raise StepError(f"no step function for task {task.name!r}")
    return STEPS[task.name](ctx)
