"""The conformance suite's shared pieces: one OpenMLDB batch engine (a Spark session costs
seconds) and one referee for the whole run. Every test here is marked `conformance`: `make
test` leaves them out, `make conformance` runs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def referee(batch_engine: runtime.BatchEngine,
            tmp_path_factory: pytest.TempPathFactory) -> Referee:
    return Referee(batch_engine, tmp_path_factory.mktemp("referee"))
