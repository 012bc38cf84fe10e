"""Click events in, request-mode features out.

An event is the seed's JSON: `{"ip": 114904, "app": 11, "device": 1, "os": 15, "channel": 319,
"click_time": 1509960088000, "is_attributed": 0}` with the same rules as the ingest topic
(`ingest.events`), except that unknown fields are refused: a client's typo should fail loudly
rather than be scored without the value it meant to send.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app

from features import connect
from features.functions import UTC8_OFFSET_MS
from ingest.events import ID_FIELDS, INT32_MAX, MAX_CLICK_MS, MIN_CLICK_MS, TABLE_COLUMNS
from serving.errors import APIError
from serving.exceptions import ServingError
from serving.metrics import FEATURE_STORE_ERRORS

_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)

Event = dict[str, int]  # a request row: TABLE_COLUMNS → value


class FeatureStoreUnavailable(ServingError):
    """The feature store did not answer a request-mode call."""


@dataclass(frozen=True)
class FeatureRows:
    """The deployment's output for some events: column names and one row per event."""

    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def parse_event(raw: object, where: str = "") -> Event:
    """The request row of one JSON event; APIError(400) names the first bad field.
    `where` prefixes field names, e.g. "[3]" for the fourth event of a batch."""
    if not isinstance(raw, dict):
        raise APIError(400, f"{where or 'the body'} must be an event (a JSON object), not "
                            f"{_json_type(raw)}", where or None)
    for name in raw:
        if name not in TABLE_COLUMNS:
            raise APIError(400, f"unknown field {_field(where, name)}: an event has "
                                f"{', '.join(TABLE_COLUMNS)}", _field(where, name))
    event = {name: _id(raw.get(name), _field(where, name)) for name in ID_FIELDS}
    event["click_time"] = _click_time_ms(raw.get("click_time"), _field(where, "click_time"))
    label = raw.get("is_attributed", 0)
    if type(label) is not int or label not in (0, 1):
        field = _field(where, "is_attributed")
        raise APIError(400, f"{field} must be 0 or 1 when given", field)
    event["is_attributed"] = label
    return event


def _field(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _id(value: object, field: str) -> int:
    if value is None:
        raise APIError(400, f"{field} is missing: an integer id is required", field)
    if type(value) is not int:  # bool and float are not ids
        raise APIError(400, f"{field} must be an integer, not {_json_type(value)}", field)
    if not 0 <= value <= INT32_MAX:
        raise APIError(400, f"{field} must be in 0..{INT32_MAX}, got {value}", field)
    return value


def _click_time_ms(value: object, field: str) -> int:
    """Epoch milliseconds, or an ISO 8601 string: naive ones are wall clock in UTC+8, as
    OpenMLDB reads timestamp strings; ones with an offset are that instant."""
    if value is None:
        raise APIError(400, f"{field} is missing: epoch milliseconds or an ISO 8601 time is "
                            f"required", field)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise APIError(400, f"{field} is not an ISO 8601 time: {value[:40]!r}",
                           field) from None
        if moment.tzinfo is None:
            millis = (moment - _EPOCH) // _ONE_MS - UTC8_OFFSET_MS
        else:
            millis = int(moment.timestamp() * 1000)
    elif type(value) is int:
        millis = value
    else:
        raise APIError(400, f"{field} must be epoch milliseconds or an ISO 8601 string, not "
                            f"{_json_type(value)}", field)
    if not MIN_CLICK_MS <= millis <= MAX_CLICK_MS:
        # Usually seconds or microseconds sent as milliseconds.
        raise APIError(400, f"{field} is outside 2000-01-01..2100-01-01 (epoch milliseconds "
                            f"expected, got {value!r:.40})", field)
    return millis


def probe_event() -> Event:
    """A harmless request row for checks: request mode never stores it."""
    return {"ip": 0, "app": 0, "device": 0, "os": 0, "channel": 0,
            "click_time": int(time.time() * 1000), "is_attributed": 0}


class FeatureStore:
    """Request-mode calls to deployments. Embedded connections belong to the thread that
    opened them (SQLite), so each thread keeps its own connection per database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()

    def _connections(self) -> dict[str, Any]:
        connections: dict[str, Any] | None = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        return connections

    def fetch(self, database: str, deployment: str,
              events: Sequence[Mapping[str, int]]) -> FeatureRows:
        """The deployment's features for each event (none of them is stored)."""
        connections = self._connections()
        try:
            conn = connections.get(database)
            if conn is None:
                conn = connections[database] = connect(self.url, database)
            rows = []
            for event in events:
                cursor = conn.cursor().callproc(deployment, event)
                row = cursor.fetchone()
                if row is None:
                    raise FeatureStoreUnavailable(f"{deployment} returned no row")
                rows.append(row)
            names = tuple(column[0] for column in cursor.description)
        except Exception as exc:  # each engine raises its own (sqlite3, openmldb, features)
            FEATURE_STORE_ERRORS.inc()
            # A broken connection would fail every later call: open a fresh one next time.
            stale = connections.pop(database, None)
            if stale is not None:
                with contextlib.suppress(Exception):
                    stale.close()
            raise FeatureStoreUnavailable(
                f"request to {database}.{deployment} failed: {exc}") from exc
        return FeatureRows(names, rows)

    def output_names(self, database: str, deployment: str) -> tuple[str, ...]:
        """The deployment's output columns, read from a probe request (works on any engine)."""
        return self.fetch(database, deployment, [probe_event()]).names


def init_app(app: Flask) -> None:
    app.extensions["fraudflow.features"] = FeatureStore(app.config["STORE_URL"])


def feature_store() -> FeatureStore:
    store: FeatureStore = current_app.extensions["fraudflow.features"]
    return store
