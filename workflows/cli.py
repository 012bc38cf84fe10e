"""`fraudflow workflow show|submit|run|step` and `fraudflow scheduler`: thin commands."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING

import click

from core.cli import settings_of
from core.clock import wall_clock_now
from core.config import Settings, WorkflowSettings
from workflows.definition import GateTask, WorkflowDefinition, build_definition
from workflows.layout import Layout
from workflows.window import SCHEDULE_TIMEZONE, Window

if TYPE_CHECKING:
    from workflows.steps import StepContext

# The steps' modules (LightGBM, matplotlib, pydolphinscheduler, prometheus_client) are
# imported by the commands that use them: every `fraudflow` command loads this module.



def _definition(ctx: click.Context) -> tuple[Settings, WorkflowSettings, WorkflowDefinition]:
    settings = settings_of(ctx)
    workflow_settings = WorkflowSettings.from_env()
    layout = Layout.under(settings.var_dir)
    return settings, workflow_settings, build_definition(settings, workflow_settings, layout)


def _step_context(settings: Settings, workflow_settings: WorkflowSettings,
                  window_end: str | None) -> StepContext:
    from workflows.steps import StepContext

    end = window_end or wall_clock_now().isoformat(sep=" ")
    return StepContext(settings, workflow_settings, Layout.under(settings.var_dir),
                       Window.ending(end, workflow_settings.training_hours))


_window_end = click.option(
    "--window-end", default=None,
    help="End of the training window: yyyyMMddHH or an ISO wall-clock time in UTC+8, floored "
         "to the hour [default: the current hour].")


@click.group("workflow")
def workflow() -> None:
    """The retraining workflow: on DolphinScheduler or the embedded runner."""


@workflow.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the DolphinScheduler workflow definition as JSON (no server needed)."""
    from workflows.dolphin import definition_json

    settings, workflow_settings, definition = _definition(ctx)
    click.echo(json.dumps(definition_json(definition, settings, workflow_settings), indent=2,
                          sort_keys=True, default=str))


@workflow.command("submit")
@click.option("--run", "start", is_flag=True, help="Start an instance once submitted.")
@click.option("--wait", is_flag=True,
              help="Follow the instance (implies --run): each task's state, a failed task's "
                   "log; exit 0 only if it ends in SUCCESS.")
@_window_end
@click.option("--timeout", type=float, default=3600, show_default=True,
              help="Seconds --wait follows the instance.")
@click.pass_context
def submit_command(ctx: click.Context, start: bool, wait: bool, window_end: str | None,
                   timeout: float) -> None:
    """Create or update the workflow on DolphinScheduler 3.1 (Java gateway
    PYDS_JAVA_GATEWAY_ADDRESS/PORT), put its schedule online (REST FRAUDFLOW_DS_REST_URL)
    and optionally run it. Without --window-end a run's window ends at its start hour, as a
    scheduled run's ends at its fire time."""
    from workflows.dolphin import submit
    from workflows.dolphin_runs import follow, rest_session, start_run

    settings, workflow_settings, definition = _definition(ctx)
    done = submit(definition, settings, workflow_settings)
    state = "online" if done.schedule_online else "OFFLINE"
    click.echo(f"workflow {definition.name!r} in project {workflow_settings.ds_project!r} "
               f"submitted (code {done.workflow_code}, {len(done.task_codes)} tasks); schedule "
               f"{definition.cron!r} {SCHEDULE_TIMEZONE} {state} (id {done.schedule_id}); "
               f"REST {workflow_settings.ds_rest_url}")
    if not (start or wait):
        return
    window_id = None if window_end is None else \
        Window.ending(window_end, workflow_settings.training_hours).id
    with rest_session(workflow_settings) as rest:
        instance = start_run(rest, done.project_code, done.workflow_code, window_id)
        click.echo(f"started instance {instance} (window end {window_id or 'its start hour'})")
        if not wait:
            return
        result = follow(rest, done.project_code, instance, click.echo, timeout)
    for name, text in result.failed_logs.items():
        click.echo(f"--- task {name} {result.tasks[name].state}; its log: ---\n{text.rstrip()}")
    click.echo(f"instance {instance} {result.state} after {result.seconds:.1f}s")
    if not result.succeeded:
        from workflows.alerting import FAILED, record_outcome
        from workflows.dolphin import failure_key

        for name in result.failed_logs:  # the failed task's own script counted it already
            record_outcome(Layout.under(settings.var_dir), settings.model_dir, FAILED,
                           failure_key(result.tasks[name].id))
        failed = ", ".join(result.failed_logs) or "none"
        click.echo(f"error: instance {instance} ended {result.state} (failed tasks: {failed})",
                   err=True)
        sys.exit(1)


@workflow.command("record-failure")
@click.argument("key")
@click.pass_context
def record_failure(ctx: click.Context, key: str) -> None:
    """Count a failed run for alerting (FraudflowRetrainingFailed), once per KEY; the
    DolphinScheduler Shell tasks call it when they fail."""
    from workflows.alerting import FAILED, record_outcome

    settings = settings_of(ctx)
    record_outcome(Layout.under(settings.var_dir), settings.model_dir, FAILED, key)
    click.echo(f"failed run {key} recorded")


@workflow.command()
@_window_end
@click.pass_context
def run(ctx: click.Context, window_end: str | None) -> None:
    """Run the whole workflow here; exit 0 when it completed, whichever branch the gate chose."""
    from workflows.runner import run_workflow

    settings, workflow_settings, definition = _definition(ctx)
    record = run_workflow(definition, _step_context(settings, workflow_settings, window_end),
                          echo=click.echo)
    sys.exit(0 if record.completed else 1)


@workflow.command()
@click.argument("task")
@_window_end
@click.option("--emit-params", is_flag=True,
              help="Print output parameters as ${setValue(name=value)} for DolphinScheduler.")
@click.pass_context
def step(ctx: click.Context, task: str, window_end: str | None, emit_params: bool) -> None:
    """Run one TASK of the workflow (import, extract, train, validate, deploy, …)."""
    from workflows.steps import run_task

    settings, workflow_settings, definition = _definition(ctx)
    runnable = [t.name for t in definition.tasks if not isinstance(t, GateTask)]
    if task not in runnable:
        raise click.BadParameter(f"choose one of {', '.join(runnable)}", param_hint="TASK")
    step_context = _step_context(settings, workflow_settings, window_end)
    chosen = definition.task(task)
    assert not isinstance(chosen, GateTask)
    result = run_task(chosen, step_context, {"window_end": step_context.window.id})
    click.echo(f"{task}: {result.summary}")
    for name, value in result.outputs.items():
        click.echo(f"${{setValue({name}={value})}}" if emit_params else f"{name}={value}")


@click.command()
@click.option("--metrics-port", type=int, default=None,
              help="Serve the workflow metrics on this port, 0 for none "
                   "[default: FRAUDFLOW_WORKFLOW_METRICS_PORT].")
@click.pass_context
def scheduler(ctx: click.Context, metrics_port: int | None) -> None:
    """Run the workflow on its cron (FRAUDFLOW_WORKFLOW_CRON) until SIGTERM or Ctrl-C."""
    from workflows.alerting import serve, write_textfile
    from workflows.runner import run_workflow
    from workflows.scheduler import run_on_schedule

    settings, workflow_settings, definition = _definition(ctx)
    layout = Layout.under(settings.var_dir)
    write_textfile(layout, settings.model_dir)
    port = workflow_settings.metrics_port if metrics_port is None else metrics_port
    if port:
        serve(layout, settings.model_dir, port)
        click.echo(f"metrics on :{port}/metrics")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        click.echo("stopping after the current run")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def run_once(fire: datetime) -> None:
        run_workflow(definition, _step_context(settings, workflow_settings, fire.isoformat()),
                     echo=click.echo)

    click.echo(f"scheduling {definition.name!r} on {definition.cron!r} (Asia/Shanghai)")
    run_on_schedule(definition.cron, run_once, stop, echo=click.echo)


commands = [workflow, scheduler]
