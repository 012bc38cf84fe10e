"""The conformance suite's shared pieces: one OpenMLDB batch engine (a Spark session costs
seconds) and one referee for the whole run. Every test here is marked `conformance`: `make
test` leaves them out, `make conformance` runs them."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.spark import runtime
from tests.conformance.referee import Referee


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.conformance)


@pytest.fixture(scope="session")
def batch_engine() -> Iterator[runtime.BatchEngine]:
    # local[2]: the machine's two cores; a fixed count keeps the shuffle (and so the order
    # OpenMLDB takes tied rows in) the same from run to run.
    engine = runtime.shared_engine("local[2]")
    yield engine
    runtime.stop_shared_engine()


REPORT = Path("var/conformance/results.json")
_RESULTS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(scope="session")
def referee(batch_engine: runtime.BatchEngine, tmp_path_factory: pytest.TempPathFactory,
            pytestconfig: pytest.Config) -> Iterator[Referee]:
    judge = Referee(batch_engine, tmp_path_factory.mktemp("referee"))
    pytestconfig.stash[_RESULTS] = judge.results
    yield judge
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(judge.results, indent=1))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The figures of this run: per data set, rows and tie groups equal on both engines."""
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    totals: dict[str, Counter[str]] = {}
    for record in results:
        total = totals.setdefault(record["data"], Counter())
        total["queries"] += 1
        total.update({k: v for k, v in record.items() if isinstance(v, int)
                      and not isinstance(v, bool)})
    terminalreporter.section("conformance figures (embedded engine vs OpenMLDB batch engine)")
    for data, t in totals.items():
        terminalreporter.write_line(
            f"{data}: {t['queries']} queries, {t['rows']} result rows, {t['rows_equal']} equal "
            f"in every column; without a tie {t['rows_without_tie_equal']}/"
            f"{t['rows_without_tie']} equal; tie groups {t['tie_groups_equal']}/"
            f"{t['tie_groups']} equal as multisets (order-sensitive aggregates "
            f"{t['order_sensitive_groups_equal']}/{t['order_sensitive_groups']}); request mode "
            f"{t['request_rows_equal']}/{t['request_rows']} rows equal")
    terminalreporter.write_line(f"(details: {REPORT})")
