"""`fraudflow bench`: every benchmark, its floor measured in the same run, JSON + a PNG chart.

Numbers on a shared 2-core machine are noisy; each figure sits beside a floor (the same work
done the simplest fast way) so the ratio is what to read.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

SUITES = ("features", "ingest", "serving", "executors", "dolphinscheduler")


def _run_suite(name: str, quick: bool) -> dict[str, Any]:
    if name == "features":
        from benchmarks import features as features_bench

        return features_bench.run(offline_rows=500_000 if quick else 10_000_000,
                                  stored_rows=100_000 if quick else 1_000_000,
                                  requests=1_000 if quick else 5_000)
    if name == "executors":  # needs the [spark] extra (make bench installs it)
        from benchmarks import offline_executors

        return offline_executors.run((200_000,) if quick else (1_000_000, 10_000_000))
    if name == "ingest":
        from benchmarks import ingest as ingest_bench

        return ingest_bench.run_benchmarks(events=50_000 if quick else 300_000,
                                           seconds=3 if quick else 20)
    if name == "dolphinscheduler":
        from benchmarks import dolphinscheduler as dolphinscheduler_bench
        from components.dolphinscheduler.config import ServerSettings
        from components.dolphinscheduler.server import check_schema
        from components.exceptions import DolphinSchedulerError

        try:
            check_schema(ServerSettings.from_env().schema)
        except DolphinSchedulerError as exc:  # say why, and go on with the other suites
            return {"skipped": str(exc)}
        return dolphinscheduler_bench.run(runs=1 if quick else 3, starts=1 if quick else 2)
    from benchmarks import serving as serving_bench

    result: dict[str, Any] = {}
    if quick:
        serving_bench.run_predict_benchmark(result, stored_events=(50_000,), duration_s=2,
                                            rounds=2, warmup_s=1)
    else:
        serving_bench.run_predict_benchmark(result)
    return result


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Every `ratio_vs_floor` in the results, keyed by its path."""
    found: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ratio_vs_floor" and isinstance(value, int | float):
                    found[path] = float(value)
                else:
                    walk(value, f"{path}.{key}" if path else key)

    walk(results, "")
    return found


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = ratios(results)
    if not found:
        return
    names = list(found)
    values = [found[n] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.5))
    ax.barh(names, values, color=["tab:green" if v >= 0.6 else "tab:orange" for v in values])
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("throughput ratio vs the floor measured in the same run (1.0 = floor)")
    ax.set_title("FraudFlow benchmarks")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command("bench")
@click.argument("suites", nargs=-1, type=click.Choice([*SUITES, "all"]))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench/results.json"), show_default=True)
@click.option("--quick", is_flag=True, help="Small sizes (a smoke run, not the goals' sizes).")
def bench(suites: tuple[str, ...], out: Path, quick: bool) -> None:
    """Run benchmarks (default all) and write JSON results and a PNG chart beside them."""
    chosen = SUITES if not suites or "all" in suites else suites
    results: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                           "cpus": _cpus(), "quick": quick},
                               "started_at": datetime.now(UTC).isoformat()}
    for name in chosen:
        click.echo(f"bench {name} …")
        started = time.perf_counter()
        results[name] = _run_suite(name, quick)
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        click.echo(json.dumps(results[name], indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    chart(results, out.with_suffix(".png"))
    click.echo(f"wrote {out} and {out.with_suffix('.png')}")


def _cpus() -> int:
    return len(os.sched_getaffinity(0))
