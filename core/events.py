"""The click event on topic `clicks`: its JSON encoding and its validation.

A message value is one JSON object:
    {"schema_version": 1, "event_id": "…", "ip": 1, "app": 3, "device": 1, "os": 13,
     "channel": 379, "click_time": 1509949941000, "is_attributed": 0}
`click_time` is epoch milliseconds, or a "YYYY-MM-DD HH:MM:SS" / ISO-8601 string read as UTC+8
when it has no offset (as OpenMLDB reads strings). `schema_version` and `event_id` may be left
out by foreign producers (kcat, …); `is_attributed` defaults to 0 (unknown at click time).
Unknown fields are ignored, so producers can add fields before consumers know them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson

from core.clock import epoch_ms_from_wall, parse_timestamp_ms

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
ID_FIELDS = ("ip", "app", "device", "os", "channel")
TABLE_COLUMNS = (*ID_FIELDS, "click_time", "is_attributed")
INT32_MAX = 2**31 - 1
# Clicks before 2000 or after 2100 are corrupt clocks or wrong units (seconds, microseconds).
MIN_CLICK_MS = 946_684_800_000
MAX_CLICK_MS = 4_102_444_800_000

Row = tuple[int, int, int, int, int, int, int]  # in TABLE_COLUMNS order


@dataclass(frozen=True)
class InvalidEvent:
    """Why a message is not a click event: `reason` is a short stable code for metrics,
    `detail` a sentence for people (both go into the dead-letter headers), `field` the field
    at fault (None when the whole value is)."""

    reason: str
    detail: str
    field: str | None = None


def encode(row: Row | tuple[int, ...], event_id: str) -> bytes:
    """The JSON value FraudFlow's producer sends for a row in TABLE_COLUMNS order."""
    event: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "event_id": event_id}
    event.update(zip(TABLE_COLUMNS, (int(v) for v in row), strict=True))
    return orjson.dumps(event)


def decode(value: bytes | None) -> Row | InvalidEvent:
    """The table row of a message value, or why it is invalid. Never raises."""
    if value is None:
        return InvalidEvent("empty", "message has no value (tombstone)")
    if len(value) > MAX_EVENT_BYTES:
        return InvalidEvent("too_large", f"value is {len(value)} bytes, limit {MAX_EVENT_BYTES}")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return InvalidEvent("not_json", f"value is not JSON: {exc}")
    return parse(event)


def parse(event: object, allowed_fields: frozenset[str] | None = None) -> Row | InvalidEvent:
    """The table row of a decoded JSON event, or why it is invalid. Never raises.
    With `allowed_fields`, any other field is refused (the predict API refuses typos; the topic
    ignores unknown fields so producers can add some before consumers know them)."""
    if not isinstance(event, dict):
        return InvalidEvent("not_object", f"value is {_json_type(event)}, not a JSON object")
    version = event.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return InvalidEvent("schema_version",
                            f"schema_version {version!r} is not supported (expected 1)",
                            "schema_version")
    if allowed_fields is not None:
        for name in event:
            if name not in allowed_fields:
                return InvalidEvent("unknown_field", f"unknown field {name!r}: an event has "
                                    f"{', '.join(TABLE_COLUMNS)}", str(name))
    values: list[int] = []
    for name in ID_FIELDS:
        value_ = event.get(name)
        if type(value_) is not int:  # bool is not an id; floats are not ids
            if value_ is None:
                return InvalidEvent("missing_field", f"field {name!r} is missing or null: an "
                                    f"integer id is required", name)
            return InvalidEvent("wrong_type", f"field {name!r} must be an integer, got "
                                f"{_json_type(value_)} {value_!r:.40}", name)
        if not 0 <= value_ <= INT32_MAX:
            return InvalidEvent("out_of_range",
                                f"field {name!r}={value_} is not in 0..{INT32_MAX}", name)
        values.append(value_)
    click_time = _click_time_ms(event.get("click_time"))
    if isinstance(click_time, InvalidEvent):
        return click_time
    values.append(click_time)
    label = event.get("is_attributed", 0)
    if label not in (0, 1) or type(label) is not int:
        return InvalidEvent("wrong_type",
                            f"field 'is_attributed' must be 0 or 1, got {label!r:.40}",
                            "is_attributed")
    values.append(label)
    return tuple(values)  # type: ignore[return-value]


def decode_batch(values: Sequence[bytes | None]) -> list[Row | InvalidEvent]:
    """`[decode(v) for v in values]`, checked a field at a time when every event is a plain
    valid one (the common case, about twice as fast); any doubt falls back to decode()."""
    if not values or None in values:
        return [decode(v) for v in values]
    blobs = cast(Sequence[bytes], values)
    if max(map(len, blobs)) > MAX_EVENT_BYTES:
        return [decode(v) for v in values]
    try:
        parsed = list(map(orjson.loads, blobs))
    except orjson.JSONDecodeError:
        return [decode(v) for v in values]
    if set(map(type, parsed)) != {dict} or any(
            e.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION for e in parsed):
        return [decode(v) for v in values]
    columns = [[e.get(name) for e in parsed] for name in ID_FIELDS]
    ranges = [(0, INT32_MAX)] * len(ID_FIELDS)
    columns.append([e.get("click_time") for e in parsed])
    ranges.append((MIN_CLICK_MS, MAX_CLICK_MS))
    columns.append([e.get("is_attributed", 0) for e in parsed])
    ranges.append((0, 1))
    for column, (low, high) in zip(columns, ranges, strict=True):
        # type() is not isinstance(): bool and float are not ids (string times: decode())
        if set(map(type, column)) != {int} or min(column) < low or max(column) > high:
            return [decode(v) for v in values]
    return list(zip(*columns, strict=True))


def _click_time_ms(raw: Any) -> int | InvalidEvent:
    if raw is None:
        return InvalidEvent("missing_field", "field 'click_time' is missing or null: epoch "
                            "milliseconds or an ISO 8601 time is required", "click_time")
    if type(raw) is int:
        millis = raw
    elif isinstance(raw, str):
        try:
            millis = parse_timestamp_ms(raw)
        except ValueError:
            return InvalidEvent("wrong_type", f"field 'click_time' {raw!r:.40} is not an ISO "
                                f"8601 time", "click_time")
    else:
        return InvalidEvent("wrong_type", f"field 'click_time' must be epoch milliseconds or "
                            f"an ISO 8601 string, got {_json_type(raw)} {raw!r:.40}",
                            "click_time")
    if not MIN_CLICK_MS <= millis <= MAX_CLICK_MS:
        # Usually seconds or microseconds sent as milliseconds.
        return InvalidEvent("out_of_range", f"field 'click_time' {raw!r:.40} is outside "
                            f"2000-01-01..2100-01-01 (epoch milliseconds expected)",
                            "click_time")
    return millis


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def rows_from_frame(frame: pd.DataFrame) -> np.ndarray:
    """Kaggle-format clicks (wall-clock `click_time`) as an int64 matrix in TABLE_COLUMNS
    order, click_time in epoch ms (the file's wall clock read as UTC+8, as OpenMLDB reads it)."""
    columns = [frame[name].to_numpy(np.int64) for name in ID_FIELDS]
    columns += [epoch_ms_from_wall(frame["click_time"]),
                frame["is_attributed"].to_numpy(np.int64)]
    return np.column_stack(columns)


def click_events(frame: pd.DataFrame) -> list[dict[str, int]]:
    """Kaggle-format clicks as event dicts (click_time in epoch ms), e.g. /predict bodies."""
    return [dict(zip(TABLE_COLUMNS, row, strict=True))
            for row in rows_from_frame(frame).tolist()]
