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
from datetime import datetime
from typing import Any, cast

import orjson

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
ID_FIELDS = ("ip", "app", "device", "os", "channel")
TABLE_COLUMNS = (*ID_FIELDS, "click_time", "is_attributed")
INT32_MAX = 2**31 - 1
# Clicks before 2000 or after 2100 are corrupt clocks or wrong units (seconds, microseconds).
MIN_CLICK_MS = 946_684_800_000
MAX_CLICK_MS = 4_102_444_800_000
_UTC8_MS = 8 * 3_600_000
_EPOCH = datetime(1970, 1, 1)

Row = tuple[int, int, int, int, int, int, int]  # in TABLE_COLUMNS order


@dataclass(frozen=True)
class InvalidEvent:
    """Why a message is not a click event; `reason` is a short stable code for metrics,
    `detail` a sentence for people (both go into the dead-letter headers)."""

    reason: str
    detail: str


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
    if not isinstance(event, dict):
        return InvalidEvent("not_object", f"value is a JSON {type(event).__name__}, not an object")
    version = event.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return InvalidEvent("schema_version",
                            f"schema_version {version!r} is not supported (expected 1)")
    values: list[int] = []
    for name in ID_FIELDS:
        value_ = event.get(name)
        if type(value_) is not int:  # bool is not an id; floats are not ids
            if value_ is None:
                return InvalidEvent("missing_field", f"field {name!r} is missing or null")
            return InvalidEvent("wrong_type",
                                f"field {name!r} must be an integer, got {value_!r:.40}")
        if not 0 <= value_ <= INT32_MAX:
            return InvalidEvent("out_of_range", f"field {name!r}={value_} is not in 0..2^31-1")
        values.append(value_)
    click_time = _click_time_ms(event.get("click_time"))
    if isinstance(click_time, InvalidEvent):
        return click_time
    values.append(click_time)
    label = event.get("is_attributed", 0)
    if label not in (0, 1) or type(label) is not int:
        return InvalidEvent("wrong_type",
                            f"field 'is_attributed' must be 0 or 1, got {label!r:.40}")
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
        return InvalidEvent("missing_field", "field 'click_time' is missing or null")
    if type(raw) is int:
        millis = raw
    elif isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return InvalidEvent("wrong_type", f"click_time {raw!r:.40} is not a timestamp")
        if moment.tzinfo is None:
            millis = (moment - _EPOCH) // _MS - _UTC8_MS
        else:
            millis = int(moment.timestamp() * 1000)
    else:
        return InvalidEvent("wrong_type",
                            f"click_time must be epoch ms or a timestamp string, got {raw!r:.40}")
    if not MIN_CLICK_MS <= millis <= MAX_CLICK_MS:
        return InvalidEvent("out_of_range",
                            f"click_time {raw!r:.40} is outside 2000-01-01..2100-01-01")
    return millis


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000) - _EPOCH  # one millisecond, for timedelta // _MS
