"""Predict-server benchmark: /predict throughput and latency with many events stored, against
the floor, a bare Flask endpoint under the same gunicorn settings, measured in the same run.

    python -m benchmarks.serving --stored-events 1000000 --stored-events 10000000 \
        --out bench/predict.json

The load generator is wrk (a C program, Debian package `wrk`): closed loop, one event-loop
thread, `concurrency` keep-alive connections, each sending the next request when its answer
arrives. Its Lua script (wrk_predict.lua) POSTs distinct realistic events: the clicks that
follow the stored ones in the same synthetic traffic, so their windows reach into stored rows.
At each concurrency the two servers take turns (a few rounds of short runs, which one goes
first alternating), so that both meet the same neighbours' load on the shared machine; each
figure is the median over the rounds, beside the load generator's own CPU, the servers' CPU
per request, each worker's memory and share of a core, and the CPU other processes used
meanwhile.

Goals (issue 16), as ratios to the floor in the same run: at concurrency 8 throughput
≥ 0.6× and p99 ≤ 2×; at concurrency 1 throughput ≥ 0.7×; no errors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from benchmarks.exceptions import LoadGeneratorMissing
from core.config import Settings
from core.events import click_events
from core.ports import free_port
from core.registry import Registry
from features.datagen import iter_click_chunks, write_clicks
from features.store import init_store, insert_clicks
from serving.cli import APP_TARGET, gunicorn_command, server_environment
from workflows.training import train_on_click_file

DATABASE, TABLE, DEPLOYMENT = "demo_db", "talkingdata", "demo"
FLOOR_TARGET = "benchmarks.serving_floor:create_floor_app()"
CONCURRENCIES = (1, 8, 32)
STORED_EVENTS = (1_000_000, 10_000_000)
MODEL_ROUNDS = 100  # a small production-like model: 100 trees of 15 leaves
TRAINING_EVENTS = 200_000
WRK_SCRIPT = Path(__file__).with_name("wrk_predict.lua")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the servers --------------------------------------------------------------

@dataclass(frozen=True)
class RunningServer:
    url: str
    master_pid: int

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        return [int(pid) for pid in children.read_text().split()]


@contextmanager
def running_servers(app_targets: Sequence[str], settings: Settings, workers: int,
                    threads: int, timeout_s: float = 60.0) -> Iterator[list[RunningServer]]:
    """Gunicorn servers of the app targets on free local ports, started together; from when
    each one's /readyz answers 200 until the block ends. Their logs go to var_dir."""
    ports = [free_port() for _ in app_targets]
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    logs = [settings.var_dir / f"server-{port}.log" for port in ports]
    processes = []
    for target, port, log in zip(app_targets, ports, logs, strict=True):
        with log.open("wb") as output:
            processes.append(subprocess.Popen(
                gunicorn_command(target, "127.0.0.1", port, workers, threads),
                env=server_environment(settings, port), stdout=output,
                stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + timeout_s
        for target, port, log, process in zip(app_targets, ports, logs, processes, strict=True):
            while not _ready(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{target} did not start; its log ends with:\n"
                                       f"{log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield [RunningServer(f"http://127.0.0.1:{port}", process.pid)
               for port, process in zip(ports, processes, strict=True)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok
    except requests.RequestException:  # not listening or not answering yet
        return False


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU the processes have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLOCK_TICKS


def _memory_mib(pid: int) -> dict[str, float]:
    """A worker's resident memory, and the part of it that is its own (anonymous): the rest
    is file pages, mostly the store's memory-mapped SQLite file, shared with the page cache."""
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "anon_mib": round(int(status["RssAnon"].split()[0]) / 1024, 1)}


# --- the load generator ---------------------------------------------------------------------

def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadGeneratorMissing("the serving benchmark needs wrk: apt-get install wrk "
                                   "(scripts/setup-machine installs it)")
    return found


def wrk(url: str, bodies: Path, concurrency: int, duration_s: int) -> dict[str, Any]:
    """One closed-loop wrk run against url's /predict: its counts and latency percentiles,
    and the CPU the load generator used (a share of one core)."""
    command = [wrk_binary(), "--threads", "1", "--connections", str(concurrency),
               "--duration", f"{duration_s}s", "--timeout", "5s", "--latency",
               "--script", str(WRK_SCRIPT), f"{url}/predict", "--", str(bodies)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("wrk-result ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr.strip()}")
    raw = json.loads(lines[-1].removeprefix("wrk-result "))
    socket_errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors",
                                         "timeouts"))
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": raw["non_2xx"] + socket_errors, "non_2xx": raw["non_2xx"],
        "socket_errors": {k: raw[k] for k in ("connect_errors", "read_errors",
                                              "write_errors", "timeouts")},
        "load_generator_cpu_share_of_one_core": round(cpu_s / wall_s, 3),
    }


def measure(server: RunningServer, bodies: Path, concurrency: int,
            duration_s: int) -> dict[str, Any]:
    """One measured wrk run; with the workers' CPU per request, each worker's memory and
    share of a core (keep-alive connections stay with the worker that accepted them, so an
    uneven split of a run's connections shows here), and how busy the machine was with other
    work meanwhile."""
    workers = server.worker_pids()
    load_before = os.getloadavg()[0]
    cpu_before, busy_before = [_cpu_seconds([pid]) for pid in workers], _machine_busy_seconds()
    started = time.perf_counter()
    figures = wrk(server.url, bodies, concurrency, duration_s)
    wall_s = time.perf_counter() - started
    spent = [_cpu_seconds([pid]) - before for pid, before in zip(workers, cpu_before,
                                                                 strict=True)]
    cpu_s = sum(spent)
    ours_s = cpu_s + figures["load_generator_cpu_share_of_one_core"] * wall_s
    figures["server_cpu_ms_per_request"] = round(1000 * cpu_s / max(figures["requests"], 1),
                                                 3)
    figures["workers"] = [{**_memory_mib(pid), "cpu_share_of_one_core": round(s / wall_s, 2)}
                          for pid, s in zip(workers, spent, strict=True)]
    figures["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    figures["other_processes_cpu_cores"] = round(
        max(0.0, _machine_busy_seconds() - busy_before - ours_s) / wall_s, 2)
    return figures


def compare(server: RunningServer, floor: RunningServer, bodies: Path, concurrency: int,
            duration_s: int, rounds: int, warmup_s: int) -> dict[str, Any]:
    """/predict against the floor at one concurrency: after a warm-up of each, `rounds`
    pairs of runs back to back (which goes first alternates), so both see the same
    neighbours' load; each figure is the median over the rounds, each ratio the median of
    the rounds' ratios (errors and requests are summed)."""
    for target in (floor, server):
        wrk(target.url, bodies, concurrency, warmup_s)
    pairs = []
    for number in range(rounds):
        order = [("floor", floor), ("predict", server)]
        measured = {name: measure(target, bodies, concurrency, duration_s)
                    for name, target in (order if number % 2 == 0 else order[::-1])}
        pairs.append({**measured,
                      "ratio_vs_floor": round(measured["predict"]["requests_per_s"]
                                              / measured["floor"]["requests_per_s"], 3),
                      "p99_ratio_to_floor": round(measured["predict"]["p99_ms"]
                                                  / measured["floor"]["p99_ms"], 3)})
    return {"floor": _medians([p["floor"] for p in pairs]),
            "predict": _medians([p["predict"] for p in pairs]),
            # throughput ratio, the figure `fraudflow bench` charts
            "ratio_vs_floor": _median([p["ratio_vs_floor"] for p in pairs]),
            "p99_ratio_to_floor": _median([p["p99_ratio_to_floor"] for p in pairs]),
            "rounds": pairs}


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summed = ("requests", "errors", "non_2xx")
    figures: dict[str, Any] = {key: sum(run[key] for run in runs) for key in summed}
    figures["socket_errors"] = {kind: sum(run["socket_errors"][kind] for run in runs)
                                for kind in runs[0]["socket_errors"]}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and key not in summed:
            figures[key] = _median([run[key] for run in runs])
    figures["workers"] = runs[-1]["workers"]
    figures["load_average_1m"] = [runs[0]["load_average_1m"][0],
                                  runs[-1]["load_average_1m"][1]]
    return figures


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _machine_busy_seconds() -> float:
    """CPU time the machine has spent on anything but idling, all CPUs (/proc/stat; steal
    counts: the hypervisor gave that time to others)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


# --- the store ------------------------------------------------------------------------------

def prepare_store(root: Path, stored_events: int, request_events: int) -> dict[str, Any]:
    """A fresh embedded store under root with `stored_events` synthetic clicks online and a
    production model; the next `request_events` clicks of the same traffic (never stored)
    go to root/bodies.jsonl as /predict bodies, without the label a client cannot know."""
    settings = _settings(root)
    init_store(settings.store_url, DATABASE, TABLE, DEPLOYMENT)
    training: pd.DataFrame | None = None
    later: list[pd.DataFrame] = []
    insert_s, seen = 0.0, 0
    for chunk in iter_click_chunks(stored_events + request_events, seed=0,
                                   chunk_rows=1_000_000):
        stored = chunk.iloc[:max(0, stored_events - seen)]
        later.append(chunk.iloc[len(stored):])
        seen += len(chunk)
        if training is None:
            training = stored.head(TRAINING_EVENTS)
        if len(stored):
            started = time.perf_counter()
            insert_clicks(settings.store_url, DATABASE, TABLE, stored)
            insert_s += time.perf_counter() - started
    assert training is not None
    registry = Registry(settings.model_dir)
    version = registry.save(*train_on_click_file(
        settings.store_url, write_clicks(training, root / "training.parquet"),
        DATABASE, TABLE, DEPLOYMENT, rounds=MODEL_ROUNDS))
    registry.promote(version.version)
    events = click_events(pd.concat(later))
    lines = [json.dumps({k: v for k, v in event.items() if k != "is_attributed"})
             for event in events]
    (root / "bodies.jsonl").write_text("\n".join(lines) + "\n")
    return {"stored_events": stored_events, "insert_seconds": round(insert_s, 1),
            "request_events": len(lines)}


def _settings(root: Path) -> Settings:
    return Settings(store_url=f"embedded://{root / 'store'}", var_dir=root / "var",
                    model_dir=root / "models", database=DATABASE, table=TABLE,
                    deployment=DEPLOYMENT)


# --- the benchmark --------------------------------------------------------------------------

def run_predict_benchmark(out: dict[str, Any],
                          stored_events: Sequence[int] = STORED_EVENTS,
                          duration_s: int = 5, rounds: int = 5,
                          concurrencies: Sequence[int] = CONCURRENCIES, workers: int = 2,
                          threads: int = 1, request_events: int = 5_000,
                          warmup_s: int = 2) -> dict[str, Any]:
    """For each store size: fill a fresh embedded store, serve a small model, and compare
    /predict with the floor at each concurrency (`rounds` runs of `duration_s` each); the
    results go to out["predict"] (and are returned), keyed by the number of stored events."""
    wrk_binary()  # before minutes of set-up
    results: dict[str, Any] = {
        "load_generator": "wrk 4.1, 1 thread, closed loop, keep-alive",
        "model": {"rounds": MODEL_ROUNDS, "num_leaves": 15},
        "server": {"workers": workers, "threads": threads},
        "runs": {"rounds": rounds, "duration_s": duration_s, "warmup_s": warmup_s}}
    for size in stored_events:
        with tempfile.TemporaryDirectory(prefix="fraudflow-bench-") as tmp:
            root = Path(tmp)
            store = prepare_store(root, size, request_events)
            figures: dict[str, Any] = {}
            with running_servers([APP_TARGET, FLOOR_TARGET], _settings(root), workers,
                                 threads) as (server, floor):
                for concurrency in concurrencies:
                    figures[str(concurrency)] = compare(
                        server, floor, root / "bodies.jsonl", concurrency, duration_s,
                        rounds, warmup_s)
        results[str(size)] = {**store, "concurrency": figures, "goals": _goals(figures)}
    out["predict"] = results
    return results


def _goals(figures: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    if "8" in figures:
        goals["c8_throughput"] = _ratio_goal(figures["8"]["ratio_vs_floor"], ">=", 0.6)
        goals["c8_p99"] = _ratio_goal(figures["8"]["p99_ratio_to_floor"], "<=", 2.0)
    if "1" in figures:
        goals["c1_throughput"] = _ratio_goal(figures["1"]["ratio_vs_floor"], ">=", 0.7)
    errors = sum(f[server]["errors"] for f in figures.values() for server in ("predict",
                                                                                "floor"))
    goals["no_errors"] = {"errors": errors, "met": errors == 0}
    return goals


def _ratio_goal(ratio: float, comparison: str, limit: float) -> dict[str, Any]:
    met = ratio >= limit if comparison == ">=" else ratio <= limit
    return {"ratio_to_floor": ratio, "goal": f"{comparison} {limit}", "met": met}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored-events", type=int, action="append",
                        help=f"events in the store (repeatable; default "
                             f"{' and '.join(map(str, STORED_EVENTS))})")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs of each server per concurrency, interleaved")
    parser.add_argument("--concurrency", type=int, action="append",
                        help=f"repeatable; default {CONCURRENCIES}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    run_predict_benchmark(results, args.stored_events or STORED_EVENTS, args.duration,
                          args.rounds, args.concurrency or CONCURRENCIES,
                          workers=args.workers, threads=args.threads)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
