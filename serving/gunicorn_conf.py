"""Gunicorn settings of the predict server; `fraudflow serve` adds bind, workers and threads.

Loaded by file path (`-c .../gunicorn_conf.py`), not as `serving.gunicorn_conf`, so that the
master process never imports the app: only workers create metrics and load models.

Metrics run in prometheus-client's multiprocess mode as its docs prescribe: the environment
variable PROMETHEUS_MULTIPROC_DIR is set before gunicorn starts (by `fraudflow serve`), the
directory is emptied before the workers start, and `child_exit` marks a dead worker so its
live gauges disappear.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set: start the server with "
                       "`fraudflow serve`, which sets it")

# Each worker builds its own app after the fork: feature-store connections and the thread that
# follows the model registry must not be shared between processes.
preload_app = False

# Several servers may run on one machine (the benchmark runs two): no shared control socket.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Start without the metric files of an earlier run: they would be summed in."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def post_fork(server: Any, worker: Any) -> None:
    """The app's own log lines (model swaps, store errors) go to stderr like gunicorn's."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")


def post_worker_init(worker: Any) -> None:
    """Once the app is loaded, its objects (the imports, the model) are moved out of the
    collector's generations: a full collection walking them paused a worker for ~0.2 s
    every few thousand requests (the p99.9 of a run)."""
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)
