"""The reliability suite (`make chaos`) as part of the test run: real broker, real consumers
killed with -9, a broker restart, 10k fuzzed events, model swaps under load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_chaos_suite_loses_nothing_and_fails_no_request(tmp_path: Path) -> None:
    env = {**os.environ, "FRAUDFLOW_VAR_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "fraudflow.chaos"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "chaos" / "report.json").read_text())
    assert report["online_exact"] and report["archive_exact"]
    assert report["online_rows"] == report["events_produced"]
    assert report["distinct_dead_letters"] == report["malformed_injected"]
    assert report["consumer_kills"] >= 3 and report["broker_restarts"] == 1
    assert report["predict_failed"] == 0 and report["predict_5xx"] == 0
    assert report["predict_ok"] > 0 and report["model_swaps"] >= 10
    assert report["corrupt_models_rejected"] == report["corrupt_models_pushed"]
