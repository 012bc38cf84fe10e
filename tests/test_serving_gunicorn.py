"""The real server: `fraudflow serve` (gunicorn, 2 workers) on the embedded store, over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks.serving import run_predict_benchmark
from core.ports import free_port
from core.registry import Registry
from tests.serving_helpers import ADMIN_TOKEN, SEED_EVENT, ServingData, registry_serving, wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 2


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    registry: Registry
    log: Path

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=5).text

    def versions_by_worker(self) -> dict[str, str]:
        """pid → the model version that worker serves, from the model_info gauge."""
        served = re.findall(r'fraudflow_model_info\{pid="(\d+)",trained_at="[^"]*",'
                            r'version="([^"]+)"\} 1\.0', self.metrics())
        return dict(served)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           serving_data: ServingData) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("gunicorn")
    registry, _ = registry_serving(root / "models", serving_data.model_a)
    port = free_port()
    env = {**os.environ, "FRAUDFLOW_STORE_URL": serving_data.store_url,
           "FRAUDFLOW_MODEL_DIR": str(registry.root), "FRAUDFLOW_VAR_DIR": str(root / "var"),
           "FRAUDFLOW_ADMIN_TOKEN": ADMIN_TOKEN}
    log = root / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudflow", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(WORKERS)],
            env=env, stdout=output, stderr=subprocess.STDOUT)
    running = Server(f"http://127.0.0.1:{port}", process, registry, log)
    try:
        wait_until(lambda: len(running.versions_by_worker()) == WORKERS, 60, "both workers")
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def test_predict_and_bad_input_over_http(server: Server) -> None:
    url = f"{server.url}/predict"
    response = requests.post(url, json=SEED_EVENT, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"model_version", "score", "decision", "threshold",
                                    "threshold_source"}
    batch = requests.post(url, json=[SEED_EVENT] * 3, timeout=5)
    assert len(batch.json()["predictions"]) == 3

    json_type = {"Content-Type": "application/json"}
    cases = [
        (requests.post(url, data="{not json", headers=json_type, timeout=5), 400),
        (requests.post(url, data="ip=1", timeout=5), 415),
        (requests.post(url, json={**SEED_EVENT, "ip": -1}, timeout=5), 400),
        (requests.post(url, json={**SEED_EVENT, "click_time": 1509960088}, timeout=5), 400),
        (requests.post(url, json=[SEED_EVENT] * 1001, timeout=5), 413),
        (requests.post(url, data=b"[" + b" " * (2 * 1024 * 1024) + b"]", headers=json_type,
                       timeout=5), 413),
        (requests.get(url, timeout=5), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert "error" in response.json()


def test_metrics_add_up_the_workers(server: Server) -> None:
    sample = re.compile(r'^fraudflow_requests_total\{endpoint="/predict",status="200"\} (\S+)$',
                        re.MULTILINE)

    def predictions_answered() -> float:
        found = sample.search(server.metrics())
        return float(found.group(1)) if found else 0.0

    def decisions_of(version: str) -> float:
        found = re.findall(rf'^fraudflow_decisions_total\{{decision="(?:fraud|ok)",'
                           rf'version="{version}"\}} (\S+)$', server.metrics(), re.MULTILINE)
        return sum(map(float, found))

    version = requests.post(f"{server.url}/predict", json=SEED_EVENT, timeout=5) \
        .json()["model_version"]
    before, decided_before = predictions_answered(), decisions_of(version)
    with ThreadPoolExecutor(4) as pool:  # concurrent, so both workers take a share
        statuses = list(pool.map(lambda _: requests.post(f"{server.url}/predict",
                                                         json=SEED_EVENT, timeout=5).status_code,
                                 range(60)))
    assert statuses == [200] * 60
    assert predictions_answered() == before + 60
    assert decisions_of(version) == decided_before + 60  # per model version, all workers
    assert len(server.versions_by_worker()) == WORKERS  # one model_info series per worker
    assert f'fraudflow_model_decision_threshold{{version="{version}"}} 0.5' in server.metrics()


def test_model_swap_under_load_fails_no_request(server: Server, serving_data: ServingData,
                                                tmp_path: Path) -> None:
    old = requests.post(f"{server.url}/predict", json=SEED_EVENT, timeout=5) \
        .json()["model_version"]
    stop = threading.Event()
    seen: Counter[str] = Counter()
    failures: list[str] = []
    after_swap: list[str] = []
    swapped_everywhere = threading.Event()

    def send_continuously() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(f"{server.url}/predict", json=SEED_EVENT, timeout=5)
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                version = response.json()["model_version"]
                seen[version] += 1
                if swapped_everywhere.is_set():
                    after_swap.append(version)

    senders = [threading.Thread(target=send_continuously) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        time.sleep(0.5)
        model_file = tmp_path / "model.txt"
        model_file.write_text(serving_data.model_b)
        update = requests.post(f"{server.url}/update", json={"model_path": str(model_file)},
                               headers=ADMIN, timeout=30)
        assert update.status_code == 200, update.text
        new = update.json()["current"]["version"]
        # The worker that took /update swapped at once; the other follows the registry.
        wait_until(lambda: set(server.versions_by_worker().values()) == {new}, 15,
              "every worker to serve the new model")
        swapped_everywhere.set()
        time.sleep(0.5)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=10)
    assert failures == []
    assert seen[old] > 0 and seen[new] > 0, seen
    assert after_swap and set(after_swap) == {new}


def test_sigterm_stops_the_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=2)
    assert "Shutting down: Master" in server.log.read_text()


def test_benchmark_runs_on_a_tiny_store() -> None:
    out: dict[str, Any] = {}
    results = run_predict_benchmark(out, stored_events=(2_000,), duration_s=1, rounds=2,
                                    concurrencies=(1, 8), workers=1, request_events=50,
                                    warmup_s=1)
    assert out["predict"] is results
    run = results["2000"]
    assert run["request_events"] == 50
    for concurrency in ("1", "8"):
        for server in ("floor", "predict"):
            figures = run["concurrency"][concurrency][server]
            assert figures["requests"] > 0 and figures["errors"] == 0
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["p999_ms"]
            assert 0 < figures["load_generator_cpu_share_of_one_core"] < 1.5
            assert figures["server_cpu_ms_per_request"] > 0
            assert figures["other_processes_cpu_cores"] >= 0
            assert [w["rss_mib"] > w["anon_mib"] > 0 and 0 < w["cpu_share_of_one_core"] < 1.5
                    for w in figures["workers"]] == [True]
        rounds = run["concurrency"][concurrency]["rounds"]
        assert len(rounds) == 2  # interleaved: the median of two is their mean
        assert run["concurrency"][concurrency]["ratio_vs_floor"] == pytest.approx(
            sum(r["ratio_vs_floor"] for r in rounds) / 2, abs=1e-3)
    assert set(run["goals"]) == {"c8_throughput", "c8_p99", "c1_throughput", "no_errors"}
    assert run["goals"]["no_errors"] == {"errors": 0, "met": True}
