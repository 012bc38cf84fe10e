"""`make chaos`: the reliability suite, on real processes, with a report.

Phase 1, under a continuous stream of clicks: kill -9 the ingest and archive consumers again
and again, restart the broker once, inject fuzzed malformed events. Then: rows stored vs events
produced (exact for the embedded store), dead letters vs injected.
Phase 2, with the predict server under load: swap models every second, push a corrupt model.
Then: failed requests and 5xx (goal 0 each).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import requests
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

import features
from components.kafka import broker
from core import events
from core.config import get_settings
from core.registry import Registry
from fraudflow.demo import wait_ready
from ingest import producer
from ingest.archive import archived_files

CLICKS = 60_000
MALFORMED = 10_000
RATE = 3_000
TOKEN = "chaos-admin-token"


def fuzzed_malformed(rng: random.Random) -> bytes:
    """An invalid event: every branch breaks a rule of ingest/events.py."""
    good = orjson.loads(events.encode((1, 2, 3, 4, 5, 1509949941000, 0), "fuzz"))
    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b"\xff{"
    if kind == 1:
        text = orjson.dumps(good)
        return text[:rng.randrange(1, len(text) - 1)]  # truncated JSON
    if kind == 2:
        field = rng.choice(events.ID_FIELDS)
        return orjson.dumps({**good, field: rng.choice(["x", 1.5, None, [], {}, True])})
    if kind == 3:
        dropped = rng.choice((*events.ID_FIELDS, "click_time"))
        return orjson.dumps({k: v for k, v in good.items() if k != dropped})
    if kind == 4:
        return orjson.dumps({**good, rng.choice(events.ID_FIELDS): -rng.randrange(1, 10**6)})
    if kind == 5:
        return orjson.dumps({**good, "click_time": rng.choice([0, 10**17, -5, "yesterday"])})
    if kind == 6:
        return orjson.dumps({**good, "schema_version": rng.randrange(2, 100)})
    return orjson.dumps({**good, "pad": "x" * (events.MAX_EVENT_BYTES + rng.randrange(10))})


class Chaos:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rng = random.Random(20261128)
        self.port = broker.free_port()
        self.bootstrap = f"{broker.HOST}:{self.port}"
        self.topic = "clicks"
        self.report: dict[str, Any] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "FRAUDFLOW_STORE_URL": f"embedded://{self.root / 'store'}",
                "FRAUDFLOW_LAKE_DIR": str(self.root / "lake"),
                "FRAUDFLOW_MODEL_DIR": str(self.root / "models"),
                "FRAUDFLOW_VAR_DIR": str(self.root / "var"),
                "FRAUDFLOW_ADMIN_TOKEN": TOKEN}

    def fraudflow(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "fraudflow", *args], env=self.env,
                                stdout=(self.root / log).open("ab"), stderr=subprocess.STDOUT)

    def start_broker(self) -> None:
        broker.start(self.root / "var", port=self.port, controller_port=broker.free_port())
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        admin.create_topics([NewTopic(self.topic, num_partitions=4, replication_factor=1)])
        admin.close()

    # --- phase 1 ----------------------------------------------------------------------------

    def stream_under_fire(self) -> None:
        feeder = self.fraudflow("produce", "--synthetic", str(CLICKS), "--seed", "9",
                                "--rate", str(RATE), "--no-progress", log="produce.log")
        injector = threading.Thread(target=self._inject)
        injector.start()
        consumers = {"ingest": self.fraudflow("ingest", "--metrics-port", "0", log="ingest.log"),
                     "archive": self.fraudflow("archive", "--metrics-port", "0",
                                               "--flush-seconds", "0.5", log="archive.log")}
        kills, restarted_broker = 0, False
        while feeder.poll() is None:
            time.sleep(self.rng.uniform(1.0, 3.0))
            name = self.rng.choice(list(consumers))
            consumers[name].send_signal(signal.SIGKILL)
            consumers[name].wait()
            kills += 1
            args = ("--flush-seconds", "0.5") if name == "archive" else ()
            consumers[name] = self.fraudflow(name, "--metrics-port", "0", *args,
                                             log=f"{name}.log")
            if not restarted_broker and kills == 4:
                broker.stop(self.root / "var")
                broker.start(self.root / "var", port=self.port)
                restarted_broker = True
        injector.join()
        for proc in consumers.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        for name in ("ingest", "archive"):  # catch up after the last kill
            args = ("--flush-seconds", "1") if name == "archive" else ()
            final = self.fraudflow(name, "--metrics-port", "0", "--until-idle", "3", *args,
                                   log=f"{name}.log")
            if final.wait(timeout=600) != 0:
                raise RuntimeError(f"{name} did not finish; see {self.root / (name + '.log')}")
        self.report.update(consumer_kills=kills, broker_restarts=int(restarted_broker),
                           feeder_exit_code=feeder.returncode)
        self._check_stream()

    def _inject(self) -> None:
        kafka = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", retries=2**31 - 1,
                              max_request_size=4 << 20)
        rng = random.Random(7)
        for sent in range(MALFORMED):
            kafka.send(self.topic, value=fuzzed_malformed(rng))
            if sent % 500 == 0:
                time.sleep(0.1)  # spread over the stream
        kafka.flush()
        kafka.close()

    def _check_stream(self) -> None:
        expected = Counter(tuple(r) for chunk in producer.synthetic_rows(CLICKS, 9)
                           for r in chunk.tolist())
        conn = features.connect(f"embedded://{self.root / 'store'}", "demo_db")
        cursor = conn.cursor()
        cursor.execute("SET @@execute_mode='online'")
        online = Counter(tuple(r) for r in cursor.execute("SELECT * FROM talkingdata").fetchall())
        conn.close()
        archived: Counter[tuple[int, ...]] = Counter()
        for path in archived_files(self.root / "lake", self.topic):
            table = pq.read_table(path)
            archived.update(zip(*(table.column(c).to_pylist() for c in events.TABLE_COLUMNS),
                                strict=True))
        dlq = KafkaConsumer(f"{self.topic}.dlq", bootstrap_servers=self.bootstrap,
                            auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                            max_partition_fetch_bytes=4 << 20)
        letters = Counter(dict(m.headers)["source.offset"] + b"@" +
                          dict(m.headers)["source.partition"] for m in dlq)
        dlq.close()
        self.report.update(
            events_produced=CLICKS, online_rows=sum(online.values()),
            online_exact=online == expected, archived_rows=sum(archived.values()),
            archive_exact=archived == expected, malformed_injected=MALFORMED,
            dead_letters=sum(letters.values()), distinct_dead_letters=len(letters))

    # --- phase 2 ----------------------------------------------------------------------------

    def serve_under_swaps(self) -> None:
        run = self.fraudflow("workflow", "run", "--window-end", "2017-11-09 17:00:00",
                             log="workflow.log")
        if run.wait(timeout=600) != 0:
            raise RuntimeError(f"workflow failed; see {self.root / 'workflow.log'}")
        registry = Registry(self.root / "models")
        first = registry.production()
        if first is None:
            raise RuntimeError("the workflow promoted no model")
        time.sleep(1.1)  # versions are named by the second
        second = registry.save(first.model_file.read_text(),
                               {**first.metadata, "note": "copy for the swap drill"})
        corrupt = self.root / "corrupt-model.txt"
        corrupt.write_text("tree\nthis is not a LightGBM model\n")
        port = broker.free_port()
        server = self.fraudflow("serve", "--port", str(port), "--workers", "2",
                                log="serve.log")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server, self.root / "serve.log")
        stop = threading.Event()
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        workers = [threading.Thread(target=_load, args=(url, stop, outcomes, lock, seed))
                   for seed in range(4)]
        for thread in workers:
            thread.start()
        swaps, corrupt_rejected = 0, 0
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for second_number in range(20):
            target = (second if second_number % 2 == 0 else first).model_file
            reply = requests.post(f"{url}/update", json={"model_path": str(target)},
                                  headers=headers, timeout=30)
            swaps += reply.status_code == 200
            if second_number % 5 == 4:
                bad = requests.post(f"{url}/update", json={"model_path": str(corrupt)},
                                    headers=headers, timeout=30)
                corrupt_rejected += 400 <= bad.status_code < 500
            time.sleep(1)
        stop.set()
        for thread in workers:
            thread.join()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        self.report.update(model_swaps=swaps, corrupt_models_pushed=4,
                           corrupt_models_rejected=corrupt_rejected,
                           predict_requests=sum(outcomes.values()),
                           predict_ok=outcomes["200"],
                           predict_5xx=sum(v for k, v in outcomes.items() if k.startswith("5")),
                           predict_failed=outcomes["error"])


def _load(url: str, stop: threading.Event, outcomes: Counter[str], lock: threading.Lock,
          seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    while not stop.is_set():
        event = {"ip": rng.randrange(1, 300_000), "app": rng.randrange(1, 700), "device": 1,
                 "os": rng.randrange(1, 40), "channel": rng.randrange(1, 500),
                 "click_time": 1_509_960_088_000 + rng.randrange(0, 86_400_000)}
        try:
            status = str(session.post(f"{url}/predict", json=event, timeout=10).status_code)
        except requests.RequestException:
            status = "error"
        with lock:
            outcomes[status] += 1


def main() -> None:
    root = get_settings().var_dir.resolve() / "chaos"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    chaos = Chaos(root)
    try:
        print("chaos: starting a broker", flush=True)
        chaos.start_broker()
        print(f"chaos: {CLICKS} clicks at {RATE}/s + {MALFORMED} malformed, consumers killed "
              "with -9 every 1-3 s, one broker restart", flush=True)
        chaos.stream_under_fire()
        print("chaos: predict server under load, a model swap every second, corrupt models",
              flush=True)
        chaos.serve_under_swaps()
    finally:
        broker.stop(root / "var")
    report = chaos.report
    (root / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ok = (report["online_exact"] and report["archive_exact"]
          and report["distinct_dead_letters"] == MALFORMED
          and report["predict_failed"] == 0 and report["predict_5xx"] == 0
          and report["corrupt_models_rejected"] == report["corrupt_models_pushed"])
    print("chaos: PASS" if ok else "chaos: FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
