"""The retraining workflow on a real DolphinScheduler 3.1.1 vs FraudFlow's local runner.

Measured: the server's start-up (launch → REST healthy, gateway accepting, master and worker
registered) and its resident memory when ready and after the runs; one full workflow run
(real sample + synthetic clicks in an embedded store's lake, gate passing, deploy, publish to
the registry) on DolphinScheduler, `submit` → instance SUCCESS, against the same run by the
local runner, the floor. Every run gets a fresh store, lake and registry, so each does the
whole work. The ratio is local seconds / DolphinScheduler seconds (1.0 = no overhead).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from components.dolphinscheduler import server
from components.dolphinscheduler.config import ServerSettings
from core.clock import epoch_ms_from_wall
from core.config import SAMPLE_DATA_DIR, Settings, WorkflowSettings
from core.lake import SCHEMA, TopicLake
from features.datagen import generate_clicks, read_clicks
from workflows.definition import build_definition
from workflows.dolphin import submit
from workflows.dolphin_runs import follow, rest_session, start_run
from workflows.layout import Layout
from workflows.runner import run_workflow
from workflows.steps import StepContext
from workflows.window import Window

WINDOW_END = "2017110917"  # the sample and the synthetic clicks end 2017-11-09 16:00 (UTC+8)


def _lake(lake_dir: Path, synthetic_rows: int) -> int:
    clicks = [read_clicks(SAMPLE_DATA_DIR / "train_sample_days.csv"),
              generate_clicks(synthetic_rows, seed=21, start="2017-11-06 16:00:00", hours=72)]
    lake = TopicLake(lake_dir, "clicks")
    for name, frame in zip(("sample", "synthetic"), clicks, strict=True):
        frame = frame.assign(click_time=epoch_ms_from_wall(frame["click_time"]))[SCHEMA.names]
        lake.write_hours(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), name)
    return sum(len(frame) for frame in clicks)


def _settings(root: Path) -> Settings:
    return Settings(store_url=f"embedded://{root / 'store'}", var_dir=root / "var",
                    lake_dir=root / "lake", model_dir=root / "models")


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1),
            "max": round(max(values), 1)}


def run(runs: int = 3, starts: int = 2, synthetic_rows: int = 20_000) -> dict[str, Any]:
    base = ServerSettings.from_env()
    server.check_schema(base.schema)
    # the gate passes (a handful of holdout installs needs a loose install-loss target)
    workflow_base = replace(WorkflowSettings(), training_hours=96, auc_floor=0.6,
                            max_install_loss=0.25)
    startup: list[float] = []
    ready_rss: list[float] = []
    on_ds: list[float] = []
    local: list[float] = []
    after_rss = 0.0
    with tempfile.TemporaryDirectory(prefix="fraudflow-bench-ds-") as scratch:
        home = Path(scratch)
        rows = 0
        for start_index in range(starts):
            info = server.start(home / "server", base, timeout=300, free_ports=True)
            try:
                startup.append(info.startup_seconds)
                ready_rss.append((info.rss_bytes or 0) / 2**20)
                if start_index:
                    continue  # later starts measure start-up only
                workflow = replace(workflow_base, ds_gateway_port=info.ports.gateway,
                                   ds_rest_url=info.rest_url)
                for index in range(runs):
                    for where, times in (("ds", on_ds), ("local", local)):
                        root = home / f"{where}-{index}"
                        settings = _settings(root)
                        rows = _lake(settings.lake_dir, synthetic_rows)
                        definition = build_definition(settings, workflow,
                                                      Layout.under(settings.var_dir))
                        began = time.monotonic()
                        if where == "ds":
                            _run_on_dolphinscheduler(definition, settings, workflow)
                        else:
                            _run_locally(definition, settings, workflow)
                        times.append(time.monotonic() - began)
                after_rss = (info.rss_bytes or 0) / 2**20
            finally:
                server.stop(home / "server")
    return {
        "server": {"version": server.VERSION, "heap_max_mb": base.heap_mb,
                   "startup_seconds": _summary(startup), "starts": starts,
                   "rss_ready_mib": _summary(ready_rss),
                   "rss_after_runs_mib": round(after_rss)},
        "workflow_run": {"clicks": rows, "runs": runs,
                         "dolphinscheduler_seconds": _summary(on_ds),
                         "local_runner_seconds": _summary(local),
                         "ratio_vs_floor": round(statistics.median(local)
                                                 / statistics.median(on_ds), 2)},
    }


def _run_on_dolphinscheduler(definition: Any, settings: Settings,
                             workflow: WorkflowSettings) -> None:
    done = submit(definition, settings, workflow)
    with rest_session(workflow) as rest:
        instance = start_run(rest, done.project_code, done.workflow_code, WINDOW_END)
        result = follow(rest, done.project_code, instance, lambda line: None, timeout=900)
    if not result.succeeded:
        raise RuntimeError(f"the benchmark's run {instance} ended {result.state}: "
                           f"{result.failed_logs}")


def _run_locally(definition: Any, settings: Settings, workflow: WorkflowSettings) -> None:
    ctx = StepContext(settings, workflow, Layout.under(settings.var_dir),
                      Window.ending(WINDOW_END, workflow.training_hours))
    record = run_workflow(definition, ctx, echo=lambda line: None)
    if not record.completed:
        raise RuntimeError(f"the benchmark's local run {record.run_id} failed")
