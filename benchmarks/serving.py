"""Predict-server benchmark: /predict latency and throughput with many events stored, against
the floor, a bare Flask endpoint under the same gunicorn settings, measured in the same run.

    python -m benchmarks.serving --stored-events 1000000 --out bench/predict.json

The load generator is closed-loop: C threads, each with one HTTP/1.1 connection, send the
next request when the previous answer arrives. It writes raw bytes on sockets, so it costs the
2-core machine far less CPU than the server; its CPU use is reported beside the figures.
Goals (issue 5): p99 ≤ 2 × floor p99 + 2 ms at concurrency 8, and ≥ 1000 requests/s.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import requests
from flask import Flask, Response, jsonify, request

from core.config import Settings
from core.events import click_events
from core.ports import free_port
from core.registry import Registry
from features.datagen import generate_clicks, write_clicks
from features.store import init_store, insert_clicks
from serving.cli import APP_TARGET, gunicorn_command, server_environment
from workflows.training import train_on_click_file

DATABASE, TABLE, DEPLOYMENT = "demo_db", "talkingdata", "demo"
FLOOR_TARGET = "benchmarks.serving:create_floor_app()"
CONCURRENCIES = (1, 8, 32)
MODEL_ROUNDS = 100  # a small production-like model: 100 trees of 15 leaves


# --- the floor and the servers --------------------------------------------------------------

def create_floor_app() -> Flask:
    """The floor: /predict reading the JSON body and answering a constant, nothing between."""
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> Response:
        request.get_json()
        return jsonify(score=0.5, decision="ok", model_version="floor")

    @app.get("/readyz")
    def readyz() -> Response:
        return jsonify(ready=True)

    return app


@contextmanager
def running_servers(app_targets: Sequence[str], settings: Settings, workers: int,
                    threads: int, timeout_s: float = 60.0) -> Iterator[list[int]]:
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
        yield ports
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


# --- the load generator ---------------------------------------------------------------------

def _request_bytes(port: int, body: bytes) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bool]:
    """Read one response; returns its status and whether the connection stays open."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1").lower().split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    length = int(headers.get("content-length", 0))
    while len(buffer) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    del buffer[:end + 4 + length]
    return int(head[0].split()[1]), headers.get("connection") != "close"


def measure(port: int, bodies: Sequence[bytes], concurrency: int,
            duration_s: float) -> dict[str, Any]:
    """Closed-loop load at `concurrency` for `duration_s` after a warm-up (a fifth of that,
    at most 1 s); latency includes reconnecting whenever the server closes a connection."""
    warmup_s = min(1.0, duration_s / 5)
    payloads = [_request_bytes(port, body) for body in bodies]
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency

    def client(index: int) -> None:
        sock: socket.socket | None = None
        buffer = bytearray()
        sent = index
        while (started := time.perf_counter()) < stop_at:
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buffer.clear()
                sock.sendall(payloads[sent % len(payloads)])
                sent += concurrency
                status, keep_alive = _read_response(sock, buffer)
            except OSError:
                status, keep_alive = 0, False
            finished = time.perf_counter()
            if not keep_alive and sock is not None:
                sock.close()
                sock = None
            if started >= measure_from:
                latencies[index].append(finished - started)
                failures[index] += status != 200
        if sock is not None:
            sock.close()

    cpu_before = time.process_time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client_cpu_s = time.process_time() - cpu_before
    samples = np.concatenate([np.asarray(t) for t in latencies]) * 1000.0
    return {
        "requests": int(samples.size), "failed": sum(failures),
        "requests_per_s": round(samples.size / duration_s, 1),
        "p50_ms": round(float(np.percentile(samples, 50)), 3),
        "p99_ms": round(float(np.percentile(samples, 99)), 3),
        "client_cpu_share_of_one_core": round(client_cpu_s / (duration_s + warmup_s), 3),
    }


# --- the benchmark --------------------------------------------------------------------------

def run_predict_benchmark(out: dict[str, Any], stored_events: int = 1_000_000,
                          duration_s: float = 10.0,
                          concurrencies: Sequence[int] = CONCURRENCIES, workers: int = 2,
                          threads: int = 1, request_events: int = 5_000) -> dict[str, Any]:
    """Fill a fresh embedded store with `stored_events` synthetic clicks, serve a small model,
    and measure /predict and the floor at each concurrency; the results go to out["predict"]
    (and are returned)."""
    with tempfile.TemporaryDirectory(prefix="fraudflow-bench-") as tmp:
        root = Path(tmp)
        settings = Settings(store_url=f"embedded://{root / 'store'}", var_dir=root / "var",
                            model_dir=root / "models", database=DATABASE, table=TABLE,
                            deployment=DEPLOYMENT)
        init_store(settings.store_url, DATABASE, TABLE, DEPLOYMENT)
        clicks = generate_clicks(stored_events, seed=0)
        started = time.perf_counter()
        insert_clicks(settings.store_url, DATABASE, TABLE, clicks)
        load_s = time.perf_counter() - started
        training_file = write_clicks(clicks.head(min(len(clicks), 200_000)),
                                     root / "training.parquet")
        registry = Registry(settings.model_dir)
        version = registry.save(*train_on_click_file(settings.store_url, training_file,
                                                     DATABASE, TABLE, DEPLOYMENT,
                                                     rounds=MODEL_ROUNDS))
        registry.promote(version.version)
        # Later clicks of the same traffic: their windows reach into the stored rows.
        bodies = [json.dumps(e).encode() for e in click_events(
            generate_clicks(request_events, seed=1, start="2017-11-08 16:00:00", hours=24))]

        figures: dict[str, Any] = {}
        with running_servers([APP_TARGET, FLOOR_TARGET], settings, workers,
                             threads) as (port, floor):
            for concurrency in concurrencies:
                floor_figures = measure(floor, bodies, concurrency, duration_s)
                predict_figures = measure(port, bodies, concurrency, duration_s)
                figures[str(concurrency)] = {
                    "floor": floor_figures, "predict": predict_figures,
                    # throughput ratio, the figure `fraudflow bench` charts
                    "ratio_vs_floor": round(predict_figures["requests_per_s"]
                                            / floor_figures["requests_per_s"], 2),
                    "p99_ratio_to_floor": round(
                        predict_figures["p99_ms"] / floor_figures["p99_ms"], 2)}

    results: dict[str, Any] = {
        "stored_events": stored_events, "insert_seconds": round(load_s, 1),
        "model": {"rounds": MODEL_ROUNDS, "num_leaves": 15},
        "server": {"workers": workers, "threads": threads, "duration_s": duration_s},
        "concurrency": figures, "goals": _goals(figures)}
    out["predict"] = results
    return results


def _goals(figures: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    if "8" in figures:
        floor_p99 = figures["8"]["floor"]["p99_ms"]
        p99 = figures["8"]["predict"]["p99_ms"]
        limit = 2 * floor_p99 + 2
        goals["p99_at_c8"] = {"p99_ms": p99, "limit_ms": round(limit, 3),
                              "ratio_to_floor": round(p99 / floor_p99, 2), "met": p99 <= limit}
    best = max(figures.values(), key=lambda f: f["predict"]["requests_per_s"])
    goals["throughput"] = {"requests_per_s": best["predict"]["requests_per_s"],
                           "goal": 1000, "met": best["predict"]["requests_per_s"] >= 1000}
    goals["no_failed_requests"] = all(f["predict"]["failed"] == 0 for f in figures.values())
    return goals


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored-events", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    run_predict_benchmark(results, args.stored_events, args.duration, workers=args.workers,
                          threads=args.threads)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
