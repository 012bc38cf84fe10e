"""The submitted workflow on DolphinScheduler 3.1's REST API: its schedule, starting a run,
following it task by task, and the log of a task that failed.

DolphinScheduler's start call answers without the new instance's id; the run started is the
first instance of the definition newer than the newest one before the call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from components.dolphinscheduler.rest import DolphinSchedulerRest, RestError
from core.config import WorkflowSettings
from workflows.definition import WINDOW_PARAM
from workflows.exceptions import GatewayError

SUCCESS = "SUCCESS"
#: Instance and task states after which nothing more happens to it.
FINAL_STATES = frozenset({"SUCCESS", "FORCED_SUCCESS", "FAILURE", "STOP", "KILL", "PAUSE"})
_LOG_LINES = 500
_REFUSALS_TOLERATED = 10


@dataclass
class TaskRun:
    id: int
    name: str
    state: str


@dataclass
class RunResult:
    instance_id: int
    state: str
    seconds: float
    tasks: dict[str, TaskRun] = field(default_factory=dict)
    failed_logs: dict[str, str] = field(default_factory=dict)  # task name → its log

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCESS


@contextmanager
def rest_session(workflow: WorkflowSettings) -> Iterator[DolphinSchedulerRest]:
    try:
        rest = DolphinSchedulerRest(workflow.ds_rest_url, workflow.ds_rest_user,
                                    workflow.ds_rest_password)
    except RestError as exc:
        raise GatewayError(f"{exc} (set FRAUDFLOW_DS_REST_URL, FRAUDFLOW_DS_REST_USER and "
                           "FRAUDFLOW_DS_REST_PASSWORD)") from None
    try:
        yield rest
    except RestError as exc:
        raise GatewayError(str(exc)) from None
    finally:
        rest.close()


def project_code(rest: DolphinSchedulerRest, name: str) -> int:
    for project in rest.get("/projects/list") or []:
        if project["name"] == name:
            return int(project["code"])
    raise GatewayError(f"DolphinScheduler has no project {name!r}: submit the workflow first")


def workflow_code(rest: DolphinSchedulerRest, project: int, name: str) -> int:
    for definition in rest.get(f"/projects/{project}/process-definition/list") or []:
        if definition["name"] == name:
            return int(definition["code"])
    raise GatewayError(f"DolphinScheduler has no workflow {name!r}: submit it first")


def schedule_of(rest: DolphinSchedulerRest, project: int, workflow: int) -> dict[str, Any]:
    page = rest.get(f"/projects/{project}/schedules", processDefinitionCode=workflow,
                    pageNo=1, pageSize=10)
    schedules = page.get("totalList") or []
    if not schedules:
        raise GatewayError(f"workflow {workflow} has no schedule in DolphinScheduler")
    return dict(schedules[0])


def online_schedule(rest: DolphinSchedulerRest, project_name: str,
                    workflow: int) -> tuple[int, dict[str, Any]]:
    """Put the workflow's schedule online (a no-op when it is); (project code, schedule)."""
    project = project_code(rest, project_name)
    schedule = schedule_of(rest, project, workflow)
    if schedule["releaseState"] != "ONLINE":
        rest.post(f"/projects/{project}/schedules/{schedule['id']}/online")
        schedule = schedule_of(rest, project, workflow)
    return project, schedule


def _newest_instance_id(rest: DolphinSchedulerRest, project: int, workflow: int) -> int:
    page = rest.get(f"/projects/{project}/process-instances", processDefineCode=workflow,
                    pageNo=1, pageSize=20)
    return max((int(item["id"]) for item in page.get("totalList") or []), default=0)


def start_run(rest: DolphinSchedulerRest, project: int, workflow: int,
              window_id: str | None, timeout: float = 60) -> int:
    """Start an instance now; `window_id` (yyyyMMddHH) overrides `${window_end}`, which is
    otherwise the run's schedule time as for a scheduled run. Returns the instance id."""
    before = _newest_instance_id(rest, project, workflow)
    params: dict[str, Any] = {
        "processDefinitionCode": workflow, "scheduleTime": "", "failureStrategy": "END",
        "warningType": "NONE", "warningGroupId": 0, "execType": "START_PROCESS",
        "taskDependType": "TASK_POST", "runMode": "RUN_MODE_SERIAL",
        "processInstancePriority": "MEDIUM", "workerGroup": "default", "dryRun": 0,
    }
    if window_id is not None:
        params["startParams"] = json.dumps({WINDOW_PARAM: window_id})
    rest.post(f"/projects/{project}/executors/start-process-instance", **params)
    deadline = time.monotonic() + timeout
    while (newest := _newest_instance_id(rest, project, workflow)) <= before:
        if time.monotonic() > deadline:
            raise GatewayError(f"DolphinScheduler accepted the start of workflow {workflow} "
                               f"but created no instance within {timeout:g}s")
        time.sleep(0.5)
    return newest


def task_runs(rest: DolphinSchedulerRest, project: int, instance: int) -> dict[str, TaskRun]:
    data = rest.get(f"/projects/{project}/process-instances/{instance}/tasks")
    return {item["name"]: TaskRun(int(item["id"]), item["name"], str(item["state"]))
            for item in data.get("taskList") or []}


def task_log(rest: DolphinSchedulerRest, task_instance: int) -> str:
    data = rest.get("/log/detail", taskInstanceId=task_instance, skipLineNum=0,
                    limit=_LOG_LINES)
    message = data.get("message") if isinstance(data, dict) else data
    return str(message or "(empty log)")


def follow(rest: DolphinSchedulerRest, project: int, instance: int,
           echo: Callable[[str], None], timeout: float, poll: float = 1.0) -> RunResult:
    """Poll the instance until it ends, echoing each task's state as it changes; the logs of
    the tasks that failed are fetched at the end."""
    started = time.monotonic()
    seen: dict[str, str] = {}
    refused = 0
    while True:
        try:
            state = str(rest.get(f"/projects/{project}/process-instances/{instance}")["state"])
            tasks = task_runs(rest, project, instance)
        except RestError:
            # 3.1.1 refuses a read now and then while the master writes the instance
            # ("query task list by process instance id error"); a few in a row are an error
            refused += 1
            if refused >= _REFUSALS_TOLERATED:
                raise
            time.sleep(poll)
            continue
        refused = 0
        for name, run in tasks.items():
            if seen.get(name) != run.state:
                seen[name] = run.state
                echo(f"  {run.state:<20} {name}")
        if state in FINAL_STATES:
            break
        if time.monotonic() - started > timeout:
            raise GatewayError(f"instance {instance} still {state} after {timeout:g}s; it "
                               "goes on in DolphinScheduler")
        time.sleep(poll)
    failed = {name: task_log(rest, run.id) for name, run in tasks.items()
              if run.state in FINAL_STATES and run.state not in (SUCCESS, "FORCED_SUCCESS")}
    return RunResult(instance, state, round(time.monotonic() - started, 1), tasks, failed)
