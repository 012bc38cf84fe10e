"""The embedded runner: the workflow's DAG on this machine, with DolphinScheduler's semantics.

Tasks run one at a time in the definition's order. A task runs when all its upstream tasks
succeeded; below a gate only the chosen branch runs, and a task whose upstream was skipped or
failed is skipped. Each run keeps `run.json` (updated after every task) and one log per task
in `<var>/workflow/runs/<run_id>/`. A run is `completed` when no task failed, whichever
branch the gate chose.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from workflows.alerting import FAILED, record_duration, record_outcome
from workflows.definition import WINDOW_PARAM, GateTask, SqlTask, StepTask, WorkflowDefinition
from workflows.layout import exclusive_lock, write_json
from workflows.steps import StepContext, run_task

SUCCESS = "success"
FAILED_TASK = "failed"
SKIPPED = "skipped"
COMPLETED = "completed"
RUN_FAILED = "failed"
# Loggers whose records go into the task logs.
_LOGGERS = ("workflows", "features", "serving")


@dataclass
class TaskRecord:
    name: str
    status: str
    summary: str
    seconds: float = 0.0
    log: str | None = None


@dataclass
class RunRecord:
    run_id: str
    window: str
    started_at: str
    status: str = "running"
    branch: str | None = None  # the gate's choice
    seconds: float = 0.0
    tasks: list[TaskRecord] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def run_workflow(definition: WorkflowDefinition, ctx: StepContext,
                 echo: Callable[[str], None] = print) -> RunRecord:
    """Run every task of `definition` for `ctx.window`; one run at a time per var dir."""
    layout = ctx.layout
    with exclusive_lock(layout.run_lock, "a workflow run"):
        started = time.monotonic()
        now = datetime.now(UTC)
        run = RunRecord(f"{now:%Y%m%dT%H%M%SZ}-{ctx.window.id}-{uuid.uuid4().hex[:6]}",
                        ctx.window.id, now.isoformat())
        folder = layout.runs / run.run_id
        folder.mkdir(parents=True)
        echo(f"run {run.run_id}: window {ctx.window.describe()}")
        params = {WINDOW_PARAM: ctx.window.id}
        status: dict[str, str] = {}
        chosen: dict[str, str] = {}  # gate → the task it chose
        for task in definition.tasks:
            record = _skip_reason(definition, task.name, status, chosen)
            if record is None:
                if isinstance(task, GateTask):
                    value = params.get(task.parameter, "")
                    chosen[task.name] = run.branch = task.branches.get(value, task.default)
                    record = TaskRecord(task.name, SUCCESS,
                                        f"{task.parameter}={value or '(unset)'} → {run.branch}")
                else:
                    record = _run_one(task, ctx, params, folder)
            status[task.name] = record.status
            run.tasks.append(record)
            echo(f"  {record.status:<8} {task.name:<13} {record.seconds:6.1f}s  {record.summary}")
            write_json(folder / "run.json", asdict(run))
        run.status = RUN_FAILED if FAILED_TASK in status.values() else COMPLETED
        run.seconds = round(time.monotonic() - started, 3)
        write_json(folder / "run.json", asdict(run))
    if not run.completed:
        record_outcome(layout, ctx.settings.model_dir, FAILED, run.run_id)
    record_duration(layout, ctx.settings.model_dir, run.seconds)
    echo(f"run {run.run_id} {run.status} in {run.seconds:.1f}s"
         + (f" (gate chose {run.branch})" if run.branch else ""))
    return run


def _skip_reason(definition: WorkflowDefinition, name: str, status: dict[str, str],
                 chosen: dict[str, str]) -> TaskRecord | None:
    for upstream in definition.upstream(name):
        if status[upstream] == FAILED_TASK:
            return TaskRecord(name, SKIPPED, f"upstream {upstream} failed")
        if status[upstream] == SKIPPED:
            return TaskRecord(name, SKIPPED, f"upstream {upstream} was skipped")
        if upstream in chosen and chosen[upstream] != name:
            return TaskRecord(name, SKIPPED, f"{upstream} chose {chosen[upstream]}")
    return None


def _run_one(task: SqlTask | StepTask, ctx: StepContext, params: dict[str, str],
             folder: Path) -> TaskRecord:
    name = task.name
    log_path = folder / f"{name}.log"
    started = time.monotonic()
    with _task_log(log_path) as logger:
        try:
            result = run_task(task, ctx, params)
        except Exception as exc:
            logger.error("%s failed:\n%s", name, traceback.format_exc())
            return TaskRecord(name, FAILED_TASK, f"{type(exc).__name__}: {exc}",
                              round(time.monotonic() - started, 3), log_path.name)
        logger.info("%s: %s", name, result.summary)
    params.update(result.outputs)
    return TaskRecord(name, SUCCESS, result.summary, round(time.monotonic() - started, 3),
                      log_path.name)


@contextmanager
def _task_log(path: Path) -> Iterator[logging.Logger]:
    """Send the workflow's (and the feature store's) log records to the task's log file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield loggers[0]
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
        handler.close()
