"""`make demo`: the whole pipeline on one machine, on the embedded defaults.

Starts the local Kafka broker, creates the table and deployment, streams the real sample and
synthetic clicks (with a few malformed events) through Kafka while the ingest and archive
consumers run, runs the retraining workflow once, starts the predict server, scores events as
curl would, and prints a report. The broker, consumers and server keep running afterwards
(`make stop` stops them); `make up` runs the same stack with the scheduler on its cron.

Each run has its own topic (`clicks-<run id>`) and its own store, lake and model registry
under `var/demo/runs/<run id>/`, so its report counts this run's events only and a run never
trains on an earlier run's clicks. On a failure or Ctrl-C the demo stops everything it started
(the broker too, if it started it) and says where the logs are.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from components.kafka import broker
from core.config import SAMPLE_DATA_DIR, Settings, get_settings
from core.exceptions import FraudFlowError
from core.ports import check_port_free
from core.registry import OperatingPoint

SAMPLE = SAMPLE_DATA_DIR / "train_sample_days.csv"
SYNTHETIC_CLICKS = 100_000
FRESHNESS_CLICKS = 5_000
FRESHNESS_RATE = 1_000
# The sample and the synthetic clicks end on 2017-11-09 16:00 (UTC+8 wall clock).
WINDOW_END = "2017-11-09 17:00:00"


class DemoError(FraudFlowError):
    """A demo step failed; the message names the step."""


class Demo:
    def __init__(self, settings: Settings, isolated: bool = True) -> None:
        """`isolated`: a run of its own (topic, store, lake, registry), as `make demo` runs;
        else the configured ones, as the long-lived `make up` stack uses."""
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") if isolated else "up"
        self.home = settings.var_dir / "demo" / "runs" / self.run_id
        self.home.mkdir(parents=True, exist_ok=True)
        self.broker_var_dir = settings.var_dir  # one broker for every run
        self.settings = settings.with_overrides(
            topic=f"{settings.topic}-{self.run_id}",
            store_url=f"embedded://{self.home / 'store'}", lake_dir=self.home / "lake",
            model_dir=self.home / "models", var_dir=self.home / "var") if isolated else settings
        self.report: dict[str, Any] = {}
        self.step_number = 0
        self.started_broker = False
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # --- plumbing ---------------------------------------------------------------------------

    def step(self, title: str, action: Callable[[], None]) -> None:
        self.step_number += 1
        print(f"\n[{self.step_number}/9] {title}", flush=True)
        started = time.monotonic()
        try:
            action()
        except Exception as exc:
            raise DemoError(f"step {self.step_number} ({title}) failed: {exc}") from exc
        print(f"      done in {time.monotonic() - started:.1f}s", flush=True)

    def fraudflow(self, *args: str, log: str | None = None) -> subprocess.Popen[bytes]:
        out = (self.home / log).open("ab") if log else None
        return subprocess.Popen([sys.executable, "-m", "fraudflow", *args], env=self.env,
                                stdout=out, stderr=subprocess.STDOUT if out else None)

    @property
    def env(self) -> dict[str, str]:
        """This run's settings, as the environment of every command it starts."""
        s = self.settings
        return {**os.environ, "FRAUDFLOW_TOPIC": s.topic, "FRAUDFLOW_STORE_URL": s.store_url,
                "FRAUDFLOW_LAKE_DIR": str(s.lake_dir), "FRAUDFLOW_MODEL_DIR": str(s.model_dir),
                "FRAUDFLOW_VAR_DIR": str(s.var_dir),
                "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers}

    def run(self, *args: str) -> None:
        proc = self.fraudflow(*args)
        if proc.wait() != 0:
            raise DemoError(f"`fraudflow {' '.join(args)}` exited with {proc.returncode}")

    def remember(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.processes[name] = proc
        pids_file = _pids_file(self.broker_var_dir)
        pids = json.loads(pids_file.read_text()) if pids_file.exists() else {}
        pids[name] = proc.pid
        pids_file.write_text(json.dumps(pids))

    def clean_up(self) -> None:
        """After a failure or Ctrl-C: stop what this run started, the broker included."""
        stop(self.broker_var_dir)
        if self.started_broker:
            self.run("kafka", "stop", "--var-dir", str(self.broker_var_dir))

    # --- steps ------------------------------------------------------------------------------

    def start_broker(self) -> None:
        self.started_broker = broker.status(self.broker_var_dir) is None
        self.run("kafka", "start", "--var-dir", str(self.broker_var_dir))

    def init_store(self) -> None:
        self.run("init")

    def start_consumers(self) -> None:
        stop(self.broker_var_dir)  # consumers or a server of an earlier demo run
        check_port_free(self.settings.ingest_metrics_port, "ingest metrics",
                        "FRAUDFLOW_INGEST_METRICS_PORT")
        check_port_free(self.settings.archive_metrics_port, "archive metrics",
                        "FRAUDFLOW_ARCHIVE_METRICS_PORT")
        self.remember("ingest", self.fraudflow(
            "ingest", "--metrics-port", str(self.settings.ingest_metrics_port),
            log="ingest.log"))
        self.remember("archive", self.fraudflow(
            "archive", "--flush-seconds", "2",
            "--metrics-port", str(self.settings.archive_metrics_port), log="archive.log"))

    def stream(self) -> None:
        self.run("produce", "--input", str(SAMPLE))
        self.run("produce", "--synthetic", str(SYNTHETIC_CLICKS), "--seed", "42")
        malformed = [b"not json", b'{"ip": -1}', b'{"ip": 1, "app": "x"}',
                     b'{"schema_version": 9}']
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                 acks="all")
        for value in malformed:
            producer.send(self.settings.topic, value=value)
        producer.flush()
        producer.close()
        self.report["events_produced"] = 10_000 + SYNTHETIC_CLICKS + len(malformed)
        self.report["malformed_injected"] = len(malformed)

    def _wait_caught_up(self, group: str) -> None:
        deadline = time.monotonic() + 300
        lag: int | str = "?"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise DemoError(f"`fraudflow {name}` exited with {proc.returncode}; see "
                                    f"{self.home / (name + '.log')}")
            try:
                lag = _group_lag(self.settings, group)
            except KafkaError as exc:  # a coordinator still loading after a broker start
                lag = f"unknown ({type(exc).__name__})"
            if lag == 0:
                return
            time.sleep(1)
        raise DemoError(f"consumer group {group} still {lag} behind after 5 min")

    def wait_for_consumers(self) -> None:
        for group in ("online-ingest", "archive"):
            self._wait_caught_up(group)
        ingest = _scrape(self.settings.ingest_metrics_port)
        self.report["events_ingested"] = int(
            _sample(ingest, "fraudflow_consumer_rows_written_total"))
        self.report["events_dead_lettered"] = int(
            _sample(ingest, "fraudflow_consumer_dead_letters_total"))
        # Freshness of a bulk replay is its backlog; measure it on a steady live stream.
        self.run("produce", "--synthetic", str(FRESHNESS_CLICKS), "--seed", "43", "--rate",
                 str(FRESHNESS_RATE), "--no-progress")
        self._wait_caught_up("online-ingest")
        after = _scrape(self.settings.ingest_metrics_port)
        self.report["freshness_p99_seconds"] = _histogram_quantile(
            after, ingest, "fraudflow_consumer_produce_to_write_seconds", 0.99)
        self.report["events_ingested"] += FRESHNESS_CLICKS
        self.report["events_produced"] += FRESHNESS_CLICKS
        self._wait_caught_up("archive")  # it flushes every 2 s: count once all is in the lake
        archive = _scrape(self.settings.archive_metrics_port)
        self.report["events_archived"] = int(
            _sample(archive, "fraudflow_consumer_rows_written_total"))

    def retrain(self) -> None:
        self.run("workflow", "run", "--window-end", WINDOW_END)
        production = self.settings.model_dir / "production.json"
        if not production.exists():
            raise DemoError("the workflow promoted no model (see the task outcomes above)")
        version = json.loads(production.read_text())["version"]
        metadata = json.loads((self.settings.model_dir / "versions" / version /
                               "metadata.json").read_text())
        self.report["model_version"] = version
        self.report["model_metrics"] = metadata.get("metrics", {})
        self.report["operating_point"] = metadata.get("operating_point")
        self.report["report_dir"] = str(self.settings.model_dir / "versions" / version / "report")

    def start_server(self, probe: str = "/readyz") -> None:
        server = self.fraudflow("serve", "--port", str(self.settings.port), "--workers", "2",
                                log="serve.log")
        self.remember("serve", server)
        wait_ready(self.url, server, self.home / "serve.log", probe=probe)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def score(self) -> None:
        from features.datagen import read_clicks

        clicks = read_clicks(SAMPLE).head(2000)
        session = requests.Session()
        latencies: list[float] = []
        scores: list[float] = []
        blocked = {"clicks": 0, "installs": 0}
        for row in clicks.itertuples():
            event = {"ip": row.ip, "app": row.app, "device": row.device, "os": row.os,
                     "channel": row.channel,
                     "click_time": row.click_time.strftime("%Y-%m-%d %H:%M:%S")}
            started = time.perf_counter()
            reply = session.post(f"{self.url}/predict", json=event, timeout=10)
            latencies.append(time.perf_counter() - started)
            reply.raise_for_status()
            scores.append(reply.json()["score"])
            if reply.json()["decision"] == "fraud":
                blocked["clicks"] += 1
                blocked["installs"] += int(row.is_attributed)
        cuts = statistics.quantiles(latencies, n=100)
        self.report["predict_requests"] = len(latencies)
        self.report["predict_p50_ms"] = round(statistics.median(latencies) * 1000, 2)
        self.report["predict_p99_ms"] = round(cuts[98] * 1000, 2)
        self.report["requests_blocked"] = blocked["clicks"]
        self.report["request_installs"] = int(clicks["is_attributed"].sum())
        self.report["request_installs_blocked"] = blocked["installs"]
        seed_event = {"ip": 114904, "app": 11, "device": 1, "os": 15, "channel": 319,
                      "click_time": 1509960088000}
        example = session.post(f"{self.url}/predict?explain=1", json=seed_event, timeout=10)
        self.report["example_request"] = seed_event
        self.report["example_reply"] = example.json()

    def print_report(self) -> None:
        r = self.report
        metrics = r.get("model_metrics", {})
        print("\n================ FraudFlow demo report ================")
        print(f"run                    {self.run_id}  (topic {self.settings.topic}; counts "
              f"are this run's only)")
        print(f"events produced        {r['events_produced']:>10}  "
              f"({r['malformed_injected']} malformed on purpose)")
        print(f"ingested (online)      {r['events_ingested']:>10}")
        print(f"archived (lake)        {r['events_archived']:>10}")
        print(f"dead-lettered          {r['events_dead_lettered']:>10}  "
              f"(topic {self.settings.topic}.dlq)")
        print(f"freshness p99        ≤ {r['freshness_p99_seconds'] * 1000:>6.0f} ms  "
              f"(produce → queryable at {FRESHNESS_RATE} events/s; a histogram bucket bound)")
        print(f"model                  {r['model_version']}")
        print(f"  holdout AUC          {metrics.get('auc', float('nan')):>10.4f}  "
              "(the gate promoted it)")
        print(f"  operating point      {_operating_point(r.get('operating_point'))}")
        print(f"predict latency        p50 {r['predict_p50_ms']} ms, p99 {r['predict_p99_ms']} ms "
              f"over {r['predict_requests']} sequential requests")
        print(f"  decisions            {r['requests_blocked']} of {r['predict_requests']} "
              f"clicks blocked, among them {r['request_installs_blocked']} of the "
              f"{r['request_installs']} that led to an install (real sample clicks, most of "
              f"them training data: not a holdout figure)")
        print("\nexample (as curl would):")
        print(f"  curl -s '{self.url}/predict?explain=1' -H 'Content-Type: application/json' "
              f"-d '{json.dumps(r['example_request'])}'")
        print(f"  → {json.dumps(r['example_reply'])}")
        print("\nwhere to look:")
        print(f"  predict metrics   {self.url}/metrics")
        print(f"  ingest metrics    http://127.0.0.1:{self.settings.ingest_metrics_port}/metrics")
        print(f"  archive metrics   "
              f"http://127.0.0.1:{self.settings.archive_metrics_port}/metrics")
        print(f"  training report   {r['report_dir']}/*.png")
        print(f"  workflow runs     {self.settings.var_dir / 'workflow' / 'runs'}")
        print(f"  logs              {self.home}/*.log")
        print(f"  this run's state  {self.home} (store, lake, models)")
        print("\nstop everything:   make stop")
        (self.home / "report.json").write_text(json.dumps(r, indent=2, default=str))


def _operating_point(stored: dict[str, Any] | None) -> str:
    if stored is None:
        return "none (decides at the default threshold)"
    return OperatingPoint.from_dict(stored).sentence()


def wait_ready(url: str, server: subprocess.Popen[bytes], log: Path,
               timeout_s: float = 120, probe: str = "/readyz") -> None:
    """Until the predict server at `url` answers `probe` with 200 (/readyz: model and store
    ready; /healthz: the process answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoError(f"the predict server exited; see {log}")
        try:
            if requests.get(f"{url}{probe}", timeout=15).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # still booting
        time.sleep(0.5)
    raise DemoError(f"the predict server was not ready within {timeout_s:.0f} s; see {log}")


def _group_lag(settings: Settings, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        committed = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        partitions = [tp for tp in committed if tp.topic == settings.topic]
        if not partitions:
            return -1  # nothing committed yet
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    return sum(ends[tp] - committed[tp].offset for tp in partitions)


def _scrape(port: int) -> list[Any]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return list(text_string_to_metric_families(text))


def _sample(families: list[Any], name: str) -> float:
    return sum(s.value for f in families for s in f.samples if s.name == name)


def _histogram_quantile(after: list[Any], before: list[Any], name: str,
                        quantile: float) -> float:
    """The bucket bound holding `quantile` of the observations made between two scrapes."""
    def buckets(families: list[Any]) -> dict[float, float]:
        return {float(s.labels["le"]): s.value for f in families for s in f.samples
                if s.name == f"{name}_bucket"}

    earlier = buckets(before)
    counts = sorted((bound, count - earlier.get(bound, 0))
                    for bound, count in buckets(after).items())
    total = counts[-1][1] if counts else 0
    for bound, count in counts:
        if total and count >= quantile * total:
            return bound
    return float("nan")


def _pids_file(var_dir: Path) -> Path:
    return var_dir / "demo" / "pids.json"


def stop(var_dir: Path) -> None:
    """Stop the consumers and the predict server a demo left running (not the broker)."""
    pids_file = _pids_file(var_dir)
    if not pids_file.exists():
        return
    for pid in json.loads(pids_file.read_text()).values():
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGTERM)
    pids_file.unlink()


# --- DolphinScheduler in `make up` (issue 12) ---------------------------------------------

def start_dolphinscheduler(demo: Demo) -> bool:
    """DolphinScheduler beside the broker, the workflow submitted with its schedule online.
    False, after one line saying why, when its H2 schema file is missing."""
    from components.dolphinscheduler.config import ServerSettings
    from components.dolphinscheduler.server import check_schema

    try:
        check_schema(ServerSettings.from_env().schema)
    except FraudFlowError as exc:
        print(f"DolphinScheduler skipped (the local scheduler runs the workflow): {exc}")
        return False
    demo.run("dolphinscheduler", "start", "--var-dir", str(demo.broker_var_dir))
    demo.run("workflow", "submit")
    return True


def up(settings: Settings) -> None:
    """The local stack, long-lived: broker, DolphinScheduler (its schedule runs the workflow;
    without it the local scheduler does), consumers, predict server, until Ctrl-C, which
    stops them all."""
    demo = Demo(settings, isolated=False)
    demo.start_broker()
    demo.init_store()
    on_dolphinscheduler = False
    try:
        on_dolphinscheduler = start_dolphinscheduler(demo)
        demo.start_consumers()
        # alive is enough: a fresh stack has no model until the first scheduled run publishes
        demo.start_server(probe="/healthz")
        where = "DolphinScheduler's schedule" if on_dolphinscheduler else "the local scheduler"
        print(f"predict server {demo.url}; retraining on FRAUDFLOW_WORKFLOW_CRON by {where}; "
              "Ctrl-C stops all")
        if on_dolphinscheduler:
            signal.pause()  # DolphinScheduler runs detached: wait for Ctrl-C
        else:
            scheduler = demo.fraudflow("scheduler")
            try:
                scheduler.wait()
            except KeyboardInterrupt:
                scheduler.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if on_dolphinscheduler:
            demo.run("dolphinscheduler", "stop", "--var-dir", str(demo.broker_var_dir))
        demo.clean_up()


def main() -> None:
    settings = get_settings()
    if sys.argv[1:] == ["stop"]:
        stop(settings.var_dir)
        for component in ("dolphinscheduler", "kafka"):
            subprocess.run([sys.executable, "-m", "fraudflow", component, "stop"], check=False)
        return
    if sys.argv[1:] == ["up"]:
        up(settings)
        return
    demo = Demo(settings)
    try:
        demo.step("Kafka broker (KRaft, local)", demo.start_broker)
        demo.step("feature store: table + deployment `demo`", demo.init_store)
        demo.step("ingest + archive consumers", demo.start_consumers)
        demo.step("streaming the real sample, synthetic clicks and a few malformed events",
                  demo.stream)
        demo.step("waiting for the consumers to catch up", demo.wait_for_consumers)
        demo.step("retraining workflow (local runner)", demo.retrain)
        demo.step("predict server", demo.start_server)
        demo.step("scoring clicks over HTTP", demo.score)
        demo.step("report", demo.print_report)
    except (DemoError, KeyboardInterrupt) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {exc}"
        print(f"\ndemo {why}\nstopping what it started; logs: {demo.home}/*.log",
              file=sys.stderr)
        demo.clean_up()
        sys.exit(1)


if __name__ == "__main__":
    main()
