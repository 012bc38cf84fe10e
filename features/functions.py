"""OpenMLDB functions the embedded engine implements, once for DuckDB (offline) and once in
Python (request mode), with OpenMLDB's semantics: timestamps are epoch milliseconds and the
calendar functions read them in UTC+8, as OpenMLDB does."""

from __future__ import annotations

from collections.abc import Callable

from core.clock import UTC8_OFFSET_MS, wall_clock


def _dayofweek(ms: int) -> int:
    return wall_clock(ms).isoweekday() % 7 + 1  # OpenMLDB: 1 = Sunday … 7 = Saturday


# name → (DuckDB template over the wall-clock timestamp `{lt}`, Python implementation)
_CALENDAR: dict[str, tuple[str, Callable[[int], int]]] = {
    "year": ("year({lt})", lambda ms: wall_clock(ms).year),
    "month": ("month({lt})", lambda ms: wall_clock(ms).month),
    "day": ("day({lt})", lambda ms: wall_clock(ms).day),
    "dayofmonth": ("day({lt})", lambda ms: wall_clock(ms).day),
    "hour": ("hour({lt})", lambda ms: wall_clock(ms).hour),
    "minute": ("minute({lt})", lambda ms: wall_clock(ms).minute),
    "second": ("second({lt})", lambda ms: wall_clock(ms).second),
    "dayofweek": ("(dayofweek({lt}) + 1)", _dayofweek),
    "weekofyear": ("weekofyear({lt})", lambda ms: wall_clock(ms).isocalendar().week),
    "dayofyear": ("dayofyear({lt})", lambda ms: wall_clock(ms).timetuple().tm_yday),
}

SCALAR_FUNCTIONS = frozenset(_CALENDAR) | {"abs"}
# OpenMLDB aggregate name → DuckDB/SQLite aggregate template over the argument `{x}`.
AGGREGATES: dict[str, str] = {
    "count": "count({x})",
    "sum": "sum({x})",
    "avg": "avg({x})",
    "min": "min({x})",
    "max": "max({x})",
    "distinct_count": "count(DISTINCT {x})",
}


def duckdb_scalar(name: str, args: list[str]) -> str:
    if name == "abs":
        return f"abs({args[0]})"
    template = _CALENDAR[name][0]
    return template.format(lt=f"epoch_ms(CAST({args[0]} AS BIGINT) + {UTC8_OFFSET_MS})")


def python_scalar(name: str, args: list[object]) -> object:
    value = args[0]
    if value is None:
        return None
    if name == "abs":
        return abs(value)  # type: ignore[arg-type]
    return _CALENDAR[name][1](int(value))  # type: ignore[call-overload]
