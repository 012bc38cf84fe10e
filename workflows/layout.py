"""Where the workflow keeps its files under the var dir, and how it writes them.

    <var>/workflow/imports/<store>.jsonl        lake files already loaded into an offline table
    <var>/workflow/staging/<table>/<batch>/     hard links of one import batch (one LOAD DATA)
    <var>/workflow/work/<window>/features/      the extracted feature table (INTO OUTFILE)
    <var>/workflow/work/<window>/holdout.parquet, candidate.json, gate.json, rejection.md
    <var>/workflow/runs/<run_id>/run.json, <task>.log
    <var>/metrics/workflow.prom, workflow-state.json

Steps of one window find each other's outputs here, so each step can run as its own process
(a DolphinScheduler task) and be re-run alone. On an OpenMLDB cluster the TaskManager (Spark)
reads `staging/` and writes `features/`: the var dir must then be on storage that it and the
workflow's workers share, as the lake is.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.exceptions import StepError


@dataclass(frozen=True)
class Layout:
    var_dir: Path

    @classmethod
    def under(cls, var_dir: Path) -> Layout:
        # Absolute: the paths go into SQL (INTO OUTFILE) and DolphinScheduler task scripts.
        return cls(Path(var_dir).absolute())

    @property
    def root(self) -> Path:
        return self.var_dir / "workflow"

    @property
    def imports(self) -> Path:
        return self.root / "imports"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def run_lock(self) -> Path:
        return self.root / "run.lock"

    def work(self, window_id: str) -> Path:
        return self.root / "work" / window_id

    def features(self, window_id: str) -> Path:
        return self.work(window_id) / "features"

    def holdout(self, window_id: str) -> Path:
        return self.work(window_id) / "holdout.parquet"

    def candidate(self, window_id: str) -> Path:
        return self.work(window_id) / "candidate.json"

    def gate(self, window_id: str) -> Path:
        return self.work(window_id) / "gate.json"

    def rejection(self, window_id: str) -> Path:
        return self.work(window_id) / "rejection.md"

    @property
    def metrics_file(self) -> Path:
        return self.var_dir / "metrics" / "workflow.prom"

    @property
    def metrics_state(self) -> Path:
        return self.var_dir / "metrics" / "workflow-state.json"


def write_json(path: Path, data: Any) -> None:
    """Replace `path` atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(temp, path)


def read_json(path: Path, produced_by: str) -> Any:
    """A step's input; the error names the step that writes it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StepError(f"{path} does not exist: run the {produced_by} step for this window "
                        "first") from None
    except ValueError as exc:
        raise StepError(f"{path} is not valid JSON: {exc}") from None


@contextmanager
def exclusive_lock(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an advisory lock on `path` (released if the process dies); unless `wait`, fail
    at once when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StepError(f"{what} is already running (lock {path} is held)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
