"""Click events in, request-mode features out.

An event is the seed's JSON: `{"ip": 114904, "app": 11, "device": 1, "os": 15, "channel": 319,
"click_time": 1509960088000, "is_attributed": 0}` with the same rules as the ingest topic
(`core.events`), except that unknown fields are refused: a client's typo should fail loudly
rather than be scored without the value it meant to send.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from core import events
from core.events import TABLE_COLUMNS
from core.exceptions import TransientError
from features import Connection, classify_store_error, connect
from serving.errors import APIError
from serving.exceptions import FeatureStoreRefused, FeatureStoreUnavailable
from serving.metrics import FEATURE_STORE_ERRORS

# Unknown fields are refused: a client's typo should fail loudly.
_ALLOWED_FIELDS = frozenset(TABLE_COLUMNS)

Event = dict[str, int]  # a request row: TABLE_COLUMNS → value


@dataclass(frozen=True)
class FeatureRows:
    """The deployment's output for some events: column names and one row per event."""

    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def parse_event(raw: object, where: str = "") -> Event:
    """The request row of one JSON event; APIError(400) names the first bad field.
    `where` prefixes field names, e.g. "[3]" for the fourth event of a batch."""
    parsed = events.parse(raw, _ALLOWED_FIELDS)
    if isinstance(parsed, events.InvalidEvent):
        field = f"{where}.{parsed.field}" if where and parsed.field else parsed.field or where
        prefix = f"{where or 'the body'}: " if where or parsed.field is None else ""
        raise APIError(400, prefix + parsed.detail, field or None)
    return dict(zip(TABLE_COLUMNS, parsed, strict=True))


def probe_event() -> Event:
    """A harmless request row for checks: request mode never stores it."""
    return {"ip": 0, "app": 0, "device": 0, "os": 0, "channel": 0,
            "click_time": int(time.time() * 1000), "is_attributed": 0}


class FeatureStore:
    """Request-mode calls to deployments. Embedded connections belong to the thread that
    opened them (SQLite), so each thread keeps its own connection, and one cursor on it, per
    database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()

    def _sessions(self) -> dict[str, _Session]:
        sessions: dict[str, _Session] | None = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        return sessions

    def fetch(self, database: str, deployment: str,
              events: Sequence[Mapping[str, int]]) -> FeatureRows:
        """The deployment's features for each event (none of them is stored).
        FeatureStoreUnavailable when retrying can help, FeatureStoreRefused when it cannot."""
        sessions = self._sessions()
        try:
            session = sessions.get(database)
            if session is None:
                session = sessions[database] = _Session(connect(self.url, database))
            cursor = session.cursor
            rows = []
            for event in events:
                row = cursor.callproc(deployment, event).fetchone()
                if row is None:
                    raise FeatureStoreRefused(f"{database}.{deployment} returned no row")
                rows.append(row)
            names = session.names()
        except Exception as exc:  # each engine raises its own (sqlite3, openmldb, features)
            FEATURE_STORE_ERRORS.inc()
            # A broken connection would fail every later call: open a fresh one next time.
            stale = sessions.pop(database, None)
            if stale is not None:
                with contextlib.suppress(Exception):
                    stale.connection.close()
            if isinstance(exc, FeatureStoreRefused):
                raise
            classified = classify_store_error(exc)
            if classified is None:
                raise  # a bug, not the store's answer
            if isinstance(classified, TransientError):
                raise FeatureStoreUnavailable(
                    f"request to {database}.{deployment} failed: {classified}") from exc
            raise FeatureStoreRefused(
                f"request to {database}.{deployment} refused: {classified}") from exc
        return FeatureRows(names, rows)

    def output_names(self, database: str, deployment: str) -> tuple[str, ...]:
        """The deployment's output columns, read from a probe request (works on any engine)."""
        return self.fetch(database, deployment, [probe_event()]).names


class _Session:
    """A thread's connection to one database and the cursor its requests go through."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.cursor = connection.cursor()
        self._description: object = None
        self._names: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        """The output column names of the cursor's last call (read again when they change)."""
        description = self.cursor.description
        if description is not self._description:
            self._names = tuple(column[0] for column in description or ())
            self._description = description
        return self._names


def init_app(app: Flask) -> None:
    app.extensions["fraudflow.features"] = FeatureStore(app.config["STORE_URL"])


def feature_store() -> FeatureStore:
    store: FeatureStore = current_app.extensions["fraudflow.features"]
    return store
