"""The workflow definition rendered to pydolphinscheduler (DolphinScheduler 3.2.x).

SQL tasks become OpenMLDB tasks, step tasks Shell tasks running `fraudflow workflow step`, the
gate a Switch on the `gate` parameter that the validate task outputs. `submit` upserts the
workflow by name through the Java gateway: the gateway hands out task codes by (project,
workflow, task name), so re-submitting updates the same tasks instead of importing JSON whose
ids must be fixed by hand.

pydolphinscheduler asks the gateway for every task's code. `show` builds the workflow offline
instead, with codes derived from the task names (as the SDK's own tests patch
`Task.gen_code_and_version`), so the definition can be printed and checked with no server.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import shlex
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlparse

from core.config import ENV_VARS as SHARED_ENV_VARS
from core.config import Settings
from workflows.config import ENV_VARS as WORKFLOW_ENV_VARS
from workflows.config import WorkflowSettings
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
# Shown for an embedded store, which no DolphinScheduler OpenMLDB task can reach.
_PLACEHOLDER_ZOOKEEPER = ("127.0.0.1:2181", "/openmldb")


def _sdk() -> Any:
    """Import the SDK; its import tries the gateway, which must not spill logs on `show`."""
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    quiet = logging.getLogger("pydolphinscheduler")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "unmatched gateway version unknown"
            return importlib.import_module("pydolphinscheduler.java_gateway")
    finally:
        quiet.setLevel(level)


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
        lines.append(f"export {SHARED_ENV_VARS[name]}={shlex.quote(str(value))}")
    for name in _WORKFLOW_EXPORTS:
        value = getattr(workflow, name)
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        lines.append(f"export {WORKFLOW_ENV_VARS[name]}={shlex.quote(text)}")
    return lines


def shell_script(task: StepTask, settings: Settings, workflow: WorkflowSettings) -> str:
    command = f"fraudflow workflow step {task.name} --window-end ${{{WINDOW_PARAM}}}"
    if task.outputs:
        command += " --emit-params"
    return "\n".join(["set -euo pipefail", *_exports(settings, workflow), command])


def build(definition: WorkflowDefinition, settings: Settings,
          workflow: WorkflowSettings) -> Any:
    """The pydolphinscheduler Workflow (each task asks for its code as it is created)."""
    _sdk()
    from pydolphinscheduler.core.workflow import Workflow
    from pydolphinscheduler.tasks.openmldb import OpenMLDB
    from pydolphinscheduler.tasks.shell import Shell
    from pydolphinscheduler.tasks.switch import Branch, Default, Switch, SwitchCondition

    zk, zk_path = zookeeper(settings.store_url) or _PLACEHOLDER_ZOOKEEPER
    with Workflow(name=definition.name, description=definition.description,
                  schedule=definition.cron, timezone=SCHEDULE_TIMEZONE,
                  project=workflow.ds_project, param=dict(definition.params),
                  # a run that would overlap the previous one waits for it
                  execution_type="SERIAL_WAIT") as flow:
        tasks: dict[str, Any] = {}
        for task in definition.tasks:
            if isinstance(task, SqlTask):
                tasks[task.name] = OpenMLDB(task.name, zk, zk_path, task.execute_mode, task.sql,
                                            description=task.description)
            elif isinstance(task, StepTask):
                tasks[task.name] = Shell(task.name, shell_script(task, settings, workflow),
                                         description=task.description,
                                         output_params={out: "" for out in task.outputs})
        for task in definition.tasks:
            if isinstance(task, GateTask):
                branches = [Branch(f'"${{{task.parameter}}}" == "{value}"', tasks[target])
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
        define["gate_parameter"] = GATE_PARAM
    return dict(define)


def submit(definition: WorkflowDefinition, settings: Settings,
           workflow: WorkflowSettings) -> int:
    """Create or update the workflow (by project and name) through the Java gateway."""
    if zookeeper(settings.store_url) is None:
        raise GatewayError(
            f"FRAUDFLOW_STORE_URL={settings.store_url!r} is not an OpenMLDB cluster: "
            "DolphinScheduler's OpenMLDB tasks need openmldb:///<db>?zk=<host:port>&zkPath=<path>")
    java_gateway = _sdk()
    from py4j.protocol import Py4JError
    from pydolphinscheduler import configuration
    from pydolphinscheduler.exceptions import PyDSBaseException

    where = f"{configuration.JAVA_GATEWAY_ADDRESS}:{configuration.JAVA_GATEWAY_PORT}"
    try:
        java_gateway.gateway.get_gateway_version()
    except Py4JError as exc:
        raise GatewayError(
            f"no DolphinScheduler Java gateway answers at {where} (set "
            "PYDS_JAVA_GATEWAY_ADDRESS, PYDS_JAVA_GATEWAY_PORT and PYDS_JAVA_GATEWAY_AUTH_TOKEN): "
            f"{exc}") from None
    try:
        return int(build(definition, settings, workflow).submit())
    except (Py4JError, PyDSBaseException) as exc:
        raise GatewayError(f"the gateway at {where} refused workflow {definition.name!r}: "
                           f"{exc}") from None
