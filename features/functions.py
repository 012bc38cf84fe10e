"""OpenMLDB functions the embedded engine implements, once for DuckDB (offline) and once in
Python (request mode), with OpenMLDB's semantics: timestamps are epoch milliseconds and the
calendar functions read them in UTC+8, as OpenMLDB does."""

from __future__ import annotations

from collections.abc import Callable

from core.clock import UTC8_OFFSET_MS, wall_clock
from features.exceptions import UnsupportedStatementError
from features.schema import Column


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
# OpenMLDB aggregate name → DuckDB/SQLite aggregate template over the argument `{x}`, with
# `{over}` where a window's OVER clause goes (empty for a plain aggregate).
AGGREGATES: dict[str, str] = {
    "count": "count({x}){over}",
    "sum": "sum({x}){over}",
    "avg": "avg({x}){over}",
    "min": "min({x}){over}",
    "max": "max({x}){over}",
    "distinct_count": "count(DISTINCT {x}){over}",  # over distinct_value(), see there
}
# OpenMLDB's distinct_count() counts a NULL as its type's zero (0, ''): measured against its
# batch engine. For other types the stand-in is not known, so a nullable one is refused.
_NULL_STANDS_FOR: dict[str, tuple[str, object]] = {
    "int16": ("0", 0), "int32": ("0", 0), "int64": ("0", 0), "float": ("0", 0.0),
    "double": ("0", 0.0), "string": ("''", ""),
}


def distinct_value(x: str, column: Column) -> tuple[str, object]:
    """(SQL of the value distinct_count() counts for column `x`, the Python value a NULL
    request value counts as)."""
    if column.not_null:
        return x, None
    if column.type not in _NULL_STANDS_FOR:
        raise UnsupportedStatementError(
            f"distinct_count() over the nullable {column.type} column {column.name}")
    sql, value = _NULL_STANDS_FOR[column.type]
    return f"coalesce({x}, {sql})", value


def aggregate_sql(name: str, x: str, over: str = "") -> str:
    """SQL of the OpenMLDB aggregate `name` over `x`; `over` is ``OVER (…)`` or empty."""
    return AGGREGATES[name].format(x=x, over=f" {over}" if over else "")


def duckdb_scalar(name: str, args: list[str]) -> str:
    if name == "abs":
        return f"abs({args[0]})"
    template = _CALENDAR[name][0]
    return template.format(lt=f"epoch_ms(CAST({args[0]} AS BIGINT) + {UTC8_OFFSET_MS})")


def python_scalar(name: str) -> Callable[[object], object]:
    """The scalar function `name` (every one takes one argument) in Python: NULL gives NULL."""
    if name == "abs":
        return lambda value: None if value is None else abs(value)  # type: ignore[arg-type]
    calendar = _CALENDAR[name][1]
    return lambda value: None if value is None else calendar(int(value))  # type: ignore[call-overload]
