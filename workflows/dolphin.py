"""The workflow definition rendered for DolphinScheduler 3.1.x, and its upsert there.

The client is pydolphinscheduler 3.1.1 (the SDK of DolphinScheduler 3.1; the 4.x SDK speaks the
3.2 gateway only). SQL tasks become OpenMLDB tasks on an OpenMLDB cluster, or Shell tasks
running `fraudflow sql` on an embedded store (the worker then reaches the store by path, so
one machine runs the whole retraining); step tasks are Shell tasks running `fraudflow workflow
step`, the gate a Switch on the `gate` OUT parameter of the validate task. `submit` upserts
the workflow by project and name through the Java gateway, which hands out task codes by
(project, workflow, task name): re-submitting updates the same tasks. The schedule is then
put online through the REST API (the gateway leaves a new schedule offline).

pydolphinscheduler asks the gateway for every task's code. `definition_json` builds the
workflow offline instead, with codes derived from the task names, so the definition can be
printed and checked with no server.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import shlex
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlparse

from core.config import ENV_VARS as SHARED_ENV_VARS
from core.config import WORKFLOW_ENV_VARS, Settings, WorkflowSettings
from workflows.definition import (
    GATE_PARAM,
    WINDOW_PARAM,
    GateTask,
    SqlTask,
    StepTask,
    WorkflowDefinition,
)
from workflows.exceptions import GatewayError
from workflows.window import SCHEDULE_TIMEZONE

# Settings the Shell tasks export, so a DolphinScheduler worker runs the steps with the
# configuration that was submitted. Secrets (the admin token) stay in the worker's environment.
_SHARED_EXPORTS = ("store_url", "var_dir", "lake_dir", "model_dir", "database", "table",
                   "deployment")
_WORKFLOW_EXPORTS = ("auc_floor", "max_auc_drop", "max_install_loss", "max_pr_auc_drop",
                     "max_blocked_drop", "training_hours", "holdout_fraction",
                     "predict_urls", "publish_retries", "publish_timeout_seconds")
#: The DolphinScheduler versions whose gateway this client speaks.
GATEWAY_VERSION = "3.1"


@dataclass(frozen=True)
class Submitted:
    project_code: int
    workflow_code: int
    task_codes: dict[str, int]
    schedule_id: int
    schedule_online: bool


def _sdk() -> Any:
    """Import the SDK quietly (its import reads its configuration, and py4j logs a lot)."""
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("pydolphinscheduler.java_gateway")


def zookeeper(store_url: str) -> tuple[str, str] | None:
    """(zk, zkPath) of an `openmldb:///db?zk=…&zkPath=…` cluster URL, else None."""
    parsed = urlparse(store_url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    if parsed.scheme != "openmldb" or "zk" not in query:
        return None
    return query["zk"], query.get("zkPath", "/openmldb")


def _exports(settings: Settings, workflow: WorkflowSettings) -> list[str]:
    lines = []
    for name in _SHARED_EXPORTS:
        value = getattr(settings, name)
        if name.endswith("_dir"):
            value = value.absolute()
        if name == "store_url":
            value = _absolute_store_url(value)
        lines.append(f"export {SHARED_ENV_VARS[name]}={shlex.quote(str(value))}")
    for name in _WORKFLOW_EXPORTS:
        value = getattr(workflow, name)
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        lines.append(f"export {WORKFLOW_ENV_VARS[name]}={shlex.quote(text)}")
    return lines


def _absolute_store_url(store_url: str) -> str:
    """An embedded store's path made absolute: the worker runs tasks in a directory of its
    own, where a relative path would name another (empty) store."""
    from pathlib import Path

    scheme, sep, path = store_url.partition("://")
    if scheme != "embedded" or not sep:
        return store_url
    return f"embedded://{Path(path).absolute()}"


def failure_key(task_instance_id: int | str) -> str:
    """How a failed DolphinScheduler task is counted for alerting: once per task instance,
    whether its own script or `submit --wait` records it."""
    return f"dolphinscheduler-task:{task_instance_id}"


def shell_script(task: StepTask | SqlTask, settings: Settings,
                 workflow: WorkflowSettings) -> str:
    """The Shell task's script: the settings, then `fraudflow workflow step` or `fraudflow sql`
    (DolphinScheduler fills `${window_end}` in before it runs). A failing command first
    counts the failed run (a scheduled run has nobody following it)."""
    if isinstance(task, SqlTask):
        command = f"fraudflow sql --mode {task.execute_mode} {shlex.quote(task.sql)}"
    else:
        command = f"fraudflow workflow step {task.name} --window-end ${{{WINDOW_PARAM}}}"
        if task.outputs:
            command += " --emit-params"
    # DolphinScheduler 3.1 runs the script in .../<instance id>/<task instance id>/ and
    # does not fill ${system.task.instance.id} in scripts: the directory names it.
    record = f"trap 'fraudflow workflow record-failure {failure_key('${PWD##*/}')}' ERR"
    return "\n".join(["set -euo pipefail", *_exports(settings, workflow), record, command])


def switch_condition(parameter: str, value: str) -> str:
    """A Switch branch's condition. DolphinScheduler substitutes a VARCHAR parameter already
    quoted, so `${gate} == "pass"` compares "pass" with "pass" (`"${gate}"` would not)."""
    return f'${{{parameter}}} == "{value}"'


def build(definition: WorkflowDefinition, settings: Settings,
          workflow: WorkflowSettings) -> Any:
    """The pydolphinscheduler ProcessDefinition (each task asks for its code as it is made)."""
    _sdk()
    from pydolphinscheduler.core.process_definition import ProcessDefinition
    from pydolphinscheduler.tasks.openmldb import OpenMLDB
    from pydolphinscheduler.tasks.shell import Shell
    from pydolphinscheduler.tasks.switch import Branch, Default, Switch, SwitchCondition

    cluster = zookeeper(settings.store_url)
    with ProcessDefinition(name=definition.name, description=definition.description,
                           schedule=definition.cron, timezone=SCHEDULE_TIMEZONE,
                           project=workflow.ds_project, tenant=workflow.ds_tenant,
                           user=workflow.ds_user, param=dict(definition.params),
                           release_state="online") as flow:
        tasks: dict[str, Any] = {}
        for task in definition.tasks:
            if isinstance(task, SqlTask) and cluster is not None:
                tasks[task.name] = OpenMLDB(task.name, cluster[0], cluster[1],
                                            task.execute_mode, task.sql,
                                            description=task.description)
            elif isinstance(task, SqlTask | StepTask):
                outputs = task.outputs if isinstance(task, StepTask) else ()
                tasks[task.name] = Shell(
                    task.name, shell_script(task, settings, workflow),
                    description=task.description,
                    local_params=[{"prop": out, "direct": "OUT", "type": "VARCHAR", "value": ""}
                                  for out in outputs])
        for task in definition.tasks:
            if isinstance(task, GateTask):
                branches = [Branch(switch_condition(task.parameter, value), tasks[target])
                            for value, target in task.branches.items()]
                tasks[task.name] = Switch(task.name, description=task.description,
                                          condition=SwitchCondition(
                                              *branches, Default(tasks[task.default])))
        gates = {t.name for t in definition.tasks if isinstance(t, GateTask)}
        for upstream, downstream in definition.edges:
            if upstream not in gates:  # the Switch links its branches itself
                tasks[upstream] >> tasks[downstream]
    return flow


@contextmanager
def _offline_codes(workflow_name: str) -> Iterator[None]:
    """Task codes from the task names instead of the gateway: stable from run to run."""
    from pydolphinscheduler.core.task import Task

    def code_and_version(task: Any) -> tuple[int, int]:
        digest = hashlib.sha256(f"{workflow_name}/{task.name}".encode()).digest()
        return int.from_bytes(digest[:6], "big"), 1

    with mock.patch.object(Task, "gen_code_and_version", code_and_version):
        yield


def definition_json(definition: WorkflowDefinition, settings: Settings,
                    workflow: WorkflowSettings) -> dict[str, Any]:
    """What `submit` sends to the gateway, built without one."""
    _sdk()
    with _offline_codes(definition.name):
        flow = build(definition, settings, workflow)
        define = flow.get_define()
        define.pop("tasks")  # Task objects; taskDefinitionJson has them
        # the SDK keeps relations in a set: sort them for a stable output
        define["taskRelationJson"].sort(key=lambda r: (r["preTaskCode"], r["postTaskCode"]))
        define["schedule"] = flow.schedule_json
        define["executionType"] = _EXECUTION_TYPE
        define["gate_parameter"] = GATE_PARAM
    return dict(define)


# A run that would overlap the previous one waits for it.
_EXECUTION_TYPE = "SERIAL_WAIT"


def _gateway(workflow: WorkflowSettings) -> Any:
    """Point the SDK at the configured gateway and check that a 3.1 gateway answers there."""
    _sdk()
    from py4j.protocol import Py4JError
    from pydolphinscheduler import configuration
    from pydolphinscheduler.java_gateway import JavaGate

    configuration.JAVA_GATEWAY_ADDRESS = workflow.ds_gateway_address
    configuration.JAVA_GATEWAY_PORT = workflow.ds_gateway_port
    where = f"{workflow.ds_gateway_address}:{workflow.ds_gateway_port}"
    try:
        socket.create_connection((workflow.ds_gateway_address, workflow.ds_gateway_port),
                                 timeout=5).close()
    except OSError as exc:
        raise GatewayError(
            f"no DolphinScheduler Java gateway answers at {where} (set "
            f"{WORKFLOW_ENV_VARS['ds_gateway_address']} and "
            f"{WORKFLOW_ENV_VARS['ds_gateway_port']}): {exc.strerror or exc}") from None
    gate = JavaGate()
    try:
        gate.java_gateway.entry_point.ping()
    # py4j misparses another protocol's answer (KeyError, ValueError, …) as often as it
    # raises its own errors
    except (Py4JError, KeyError, IndexError, ValueError) as exc:
        raise GatewayError(
            f"the Java gateway at {where} answered, but not as DolphinScheduler "
            f"{GATEWAY_VERSION}.x's, the version FraudFlow speaks (3.2+ gateways want an auth "
            f"token and renamed the workflow calls): {_reason(exc)}") from None
    return gate


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text and not isinstance(exc, KeyError) \
        else type(exc).__name__


def submit(definition: WorkflowDefinition, settings: Settings,
           workflow: WorkflowSettings) -> Submitted:
    """Create or update the workflow (by project and name) and put its schedule online."""
    from py4j.protocol import Py4JError
    from pydolphinscheduler.exceptions import PyDSBaseException

    from workflows.dolphin_runs import online_schedule, rest_session

    gate = _gateway(workflow)
    where = f"{workflow.ds_gateway_address}:{workflow.ds_gateway_port}"
    try:
        flow = build(definition, settings, workflow)
        flow._ensure_side_model_exists()  # the SDK's own submit() step: user, tenant, project
        flow._pre_submit_check()
        enum = gate.java_gateway.jvm.org.apache.dolphinscheduler.common.enums
        code = gate.create_or_update_process_definition(
            flow._user, flow._project, flow.name, str(flow.description or ""),
            json.dumps(flow.param_json), flow.warning_type, flow.warning_group_id, flow.timeout,
            flow.worker_group, flow._tenant, flow.release_state,
            json.dumps(flow.task_relation_json), json.dumps(flow.task_definition_json),
            json.dumps(flow.schedule_json), None,
            enum.ProcessExecutionTypeEnum.valueOf(_EXECUTION_TYPE))
    except (Py4JError, PyDSBaseException) as exc:
        raise GatewayError(f"the gateway at {where} refused workflow {definition.name!r}: "
                           f"{_reason(exc)}") from None
    task_codes = {task.name: int(task.code) for task in flow.task_list}
    with rest_session(workflow) as rest:
        project_code, schedule = online_schedule(rest, workflow.ds_project, int(code))
    return Submitted(project_code=project_code, workflow_code=int(code), task_codes=task_codes,
                     schedule_id=int(schedule["id"]),
                     schedule_online=schedule["releaseState"] == "ONLINE")
