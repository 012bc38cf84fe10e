"""The retraining workflow, defined once: tasks, edges, the gate's branches, the schedule.

    create_table → import → extract → train → validate → gate ─pass→ deploy → load_online → publish
                                                              └─else→ report

`workflows.dolphin` renders it to a DolphinScheduler workflow (OpenMLDB tasks for the SQL,
Shell tasks running `fraudflow workflow step <task>`, a Switch for the gate); `workflows.runner`
runs the same DAG on this machine. Both fill `${window_end}` (yyyyMMddHH): DolphinScheduler
from the run's schedule time, the local runner from its argument.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.config import Settings, WorkflowSettings
from workflows.layout import Layout
from workflows.sql import create_table_sql, deploy_sql, extract_sql

WINDOW_PARAM = "window_end"
GATE_PARAM = "gate"


@dataclass(frozen=True)
class SqlTask:
    """OpenMLDB statements, run in one session in `execute_mode`."""

    name: str
    description: str
    execute_mode: str
    sql: str


@dataclass(frozen=True)
class StepTask:
    """A `fraudflow workflow step` library function; `outputs` are the parameters it passes
    downstream (DolphinScheduler OUT parameters)."""

    name: str
    description: str
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateTask:
    """Branch on a parameter: `branches` maps its value to the next task, else `default`."""

    name: str
    description: str
    parameter: str
    branches: Mapping[str, str]
    default: str


Task = SqlTask | StepTask | GateTask


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    description: str
    cron: str  # Quartz, Asia/Shanghai
    params: Mapping[str, str]  # DolphinScheduler global parameters
    tasks: tuple[Task, ...]  # in an order that respects the edges
    edges: tuple[tuple[str, str], ...]  # (upstream, downstream), gate branches included
    _by_name: dict[str, Task] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tasks})
        seen: set[str] = set()
        for task in self.tasks:
            missing = [u for u in self.upstream(task.name) if u not in seen]
            if missing:
                raise ValueError(f"task {task.name} comes before its upstream {missing}")
            seen.add(task.name)

    def task(self, name: str) -> Task:
        return self._by_name[name]

    def upstream(self, name: str) -> list[str]:
        return [up for up, down in self.edges if down == name]

    def downstream(self, name: str) -> list[str]:
        return [down for up, down in self.edges if up == name]


def build_definition(settings: Settings, workflow: WorkflowSettings,
                     layout: Layout) -> WorkflowDefinition:
    features = f"{layout.root}/work/${{{WINDOW_PARAM}}}/features"
    tasks: tuple[Task, ...] = (
        SqlTask("create_table", "Create the database and click table if missing.", "offline",
                create_table_sql(settings)),
        StepTask("import", "LOAD DATA the lake files not imported yet into the offline table."),
        SqlTask("extract", "The deployment's feature SQL over the offline table, INTO OUTFILE.",
                "offline", extract_sql(settings, features)),
        StepTask("train", "LightGBM on the window, newest clicks held out; into the registry."),
        StepTask("validate", "Gate: AUC floor and no worse than production on the holdout.",
                 outputs=(GATE_PARAM,)),
        GateTask("gate", "Deploy and publish a passing candidate, else report it.", GATE_PARAM,
                 branches={"pass": "deploy"}, default="report"),
        SqlTask("deploy", "DEPLOY the feature SQL (named by its hash: rerun-safe).", "online",
                deploy_sql(settings)),
        StepTask("load_online", "Bootstrap an empty online table from the lake."),
        StepTask("publish", "Update the predict servers, then promote in the registry."),
        StepTask("report", "Explain the rejected candidate; count it for alerting."),
    )
    chain = ("create_table", "import", "extract", "train", "validate", "gate")
    edges = (*itertools.pairwise(chain),
             ("gate", "deploy"), ("deploy", "load_online"), ("load_online", "publish"),
             ("gate", "report"))
    return WorkflowDefinition(name=workflow.ds_workflow,
                              description="FraudFlow: retrain, gate and redeploy the click-fraud "
                                          "model",
                              cron=workflow.cron,
                              params={WINDOW_PARAM: "$[yyyyMMddHH]"}, tasks=tasks, edges=edges)
