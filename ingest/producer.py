"""`fraudflow produce`: replay a Kaggle-format file, or synthetic clicks, onto topic `clicks`.

Messages are keyed by ip (a click's history stays in one partition, in order) and carry the
JSON event of ingest/events.py. Sends use acks=all; the count printed at the end is of
acknowledged events only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from core import events
from core.config import KAFKA_MESSAGE_MAX_BYTES
from features.datagen import iter_click_chunks, read_clicks
from ingest.exceptions import IngestError

log = logging.getLogger(__name__)
# Sends run up to this far ahead of schedule before sleeping: a sleep per event (5000
# wake-ups a second at --rate 5000) cost the producer more CPU than sending.
PACE_STEP_S = 0.002


@dataclass(frozen=True)
class ProduceStats:
    sent: int
    acknowledged: int
    failed: int
    seconds: float


def file_rows(path: Path) -> Iterator[np.ndarray]:
    yield events.rows_from_frame(read_clicks(path))


def synthetic_rows(count: int, seed: int) -> Iterator[np.ndarray]:
    for chunk in iter_click_chunks(count, seed=seed, chunk_rows=200_000):
        yield events.rows_from_frame(chunk)


class _Pacer:
    """Sleeps so sends follow `rate` events/s, or event time sped up by `speedup`."""

    def __init__(self, rate: float | None, speedup: float | None) -> None:
        self.rate = rate
        self.speedup = speedup
        self.started = time.monotonic()
        self.first_event_ms: int | None = None

    def wait(self, sent: int, event_ms: int) -> None:
        if self.rate:
            due = self.started + sent / self.rate
        elif self.speedup:
            if self.first_event_ms is None:
                self.first_event_ms = event_ms
            due = self.started + (event_ms - self.first_event_ms) / 1000 / self.speedup
        else:
            return
        delay = due - time.monotonic()
        if delay > PACE_STEP_S:
            time.sleep(delay)


def produce(chunks: Iterable[np.ndarray], bootstrap_servers: str, topic: str,
            source: str, rate: float | None = None, speedup: float | None = None,
            limit: int | None = None, progress: bool = True) -> ProduceStats:
    """Send every row of `chunks` (int matrices, TABLE_COLUMNS order) to `topic`."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all",
                             linger_ms=5, batch_size=512 * 1024,
                             max_request_size=KAFKA_MESSAGE_MAX_BYTES, retries=2**31 - 1,
                             max_in_flight_requests_per_connection=1)  # keep per-key order
    counts = {"ok": 0, "failed": 0}

    def acknowledged(_: object) -> None:
        counts["ok"] += 1

    def failed(exc: BaseException) -> None:
        counts["failed"] += 1
        log.error("send failed: %s", exc)

    pacer = _Pacer(rate, speedup)
    started = time.monotonic()
    sent = 0
    bar = tqdm(total=limit, unit="ev", disable=not progress, desc=f"produce → {topic}")
    try:
        for chunk in chunks:
            for row in chunk.tolist():
                if limit is not None and sent >= limit:
                    break
                pacer.wait(sent, row[5])
                future = producer.send(topic, key=str(row[0]).encode(),
                                       value=events.encode(row, f"{source}:{sent}"))
                future.add_callback(acknowledged).add_errback(failed)
                sent += 1
                if sent % 1000 == 0:
                    bar.update(1000)
            if limit is not None and sent >= limit:
                break
        producer.flush()
    except KafkaError as exc:
        raise IngestError(f"cannot produce to {topic} at {bootstrap_servers}: {exc}") from exc
    finally:
        bar.update(sent % 1000)
        bar.close()
        producer.close(timeout=30)
    return ProduceStats(sent, counts["ok"], counts["failed"], time.monotonic() - started)
