"""Request-mode execution of a deployment against the online table (SQLite).

OpenMLDB request mode: the request row is counted in its own windows but never stored; stored
rows whose timestamp equals the request's are in the window; windows read through the table's
index for their partition keys, so that index's TTL decides which stored rows are visible.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features import dialect as d
from features.exceptions import CatalogError, UnsupportedStatementError
from features.functions import (
    AGGREGATES,
    SCALAR_FUNCTIONS,
    aggregate_sql,
    distinct_value,
    python_scalar,
)
from features.offline import quote, window_argument
from features.schema import Column, Index, TableSchema

# The name under which a clustered table's own key order stands among its SQLite indexes.
CLUSTERED_KEY = "PRIMARY KEY"


@dataclass(frozen=True)
class _WindowQuery:
    spec: d.WindowSpec
    index: Index
    calls: tuple[d.Call, ...]  # the aggregates computed over this window


class RequestPlan:
    """A deployment compiled for request mode: one SQLite query per window, Python scalars."""

    def __init__(self, select: d.Select, table: TableSchema, sqlite_table: str,
                 output: list[Column], sqlite_indexes: Mapping[str, str]) -> None:
        """`sqlite_indexes`: the SQLite index each window (by name) reads."""
        self.select = select
        self.table = table
        self.sqlite_table = sqlite_table
        self.output = output
        self.sqlite_indexes = sqlite_indexes
        self.windows = [self._window_query(spec) for spec in select.windows.values()]
        for item in select.items:
            if item.expr is not None:
                _check_request_expr(item.expr, select.windows)

    def _window_query(self, spec: d.WindowSpec) -> _WindowQuery:
        calls = tuple(d.calls_over(spec.name, [i.expr for i in self.select.items if i.expr]))
        for call in calls:
            if call.name not in AGGREGATES:
                raise UnsupportedStatementError(
                    f"the embedded engine does not implement the window function {call.name}()")
            if not call.star:
                window_argument(call)  # raises for expressions
        wanted = set(spec.partition_by)
        for index in self.table.indexes:
            if set(index.keys) == wanted and index.ts == spec.order_by:
                return _WindowQuery(spec, index, calls)
        raise CatalogError(
            f"table {self.table.name!r} has no index KEY=({', '.join(spec.partition_by)}) "
            f"TS={spec.order_by} for window {spec.name!r}; DEPLOY creates it")

    def execute(self, db: sqlite3.Connection, request: Mapping[str, Any],
                now_ms: int | None = None) -> tuple[Any, ...]:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        values: dict[d.Call, Any] = {}
        for window in self.windows:
            values.update(self._aggregate(db, window, request, now_ms))
        row: list[Any] = []
        for item in self.select.items:
            if item.expr is None:
                row.extend(request[name] for name in self.table.column_names)
            else:
                row.append(_evaluate(item.expr, request, values))
        return tuple(_as_type(v, c.type) for v, c in zip(row, self.output, strict=True))

    def _aggregate(self, db: sqlite3.Connection, window: _WindowQuery,
                   request: Mapping[str, Any], now_ms: int) -> dict[d.Call, Any]:
        spec, index = window.spec, window.index
        ts_col = quote(spec.order_by)
        request_ts = request[spec.order_by]
        params: list[Any] = []
        key_filters = []
        for key in spec.partition_by:
            if request[key] is None:
                key_filters.append(f"{quote(key)} IS NULL")
            else:
                key_filters.append(f"{quote(key)} = ?")
                params.append(request[key])
        columns = sorted({c.args[0].name for c in window.calls if not c.star
                          and isinstance(c.args[0], d.ColumnRef)} | {spec.order_by})
        source = self._visible_rows(index, self.sqlite_indexes[spec.name], columns,
                                    key_filters, now_ms)
        frame = [f"{ts_col} < ?" if spec.exclude_current_time else f"{ts_col} <= ?"]
        params.append(request_ts)
        if spec.frame == "rows_range" and spec.preceding is not None:
            frame.append(f"{ts_col} >= ?")
            params.append(request_ts - spec.preceding)
        limit = spec.preceding if spec.frame == "rows" else (
            spec.maxsize - 1 if spec.maxsize is not None else None)
        rows_sql = f"SELECT * FROM {source} WHERE {' AND '.join(frame)}"
        if limit is not None:
            rows_sql += f" ORDER BY {ts_col} DESC, _seq DESC LIMIT {int(limit)}"
        selects: list[str] = []
        probes: list[Any] = []  # the select list's own parameters come first in the SQL text
        for call in window.calls:
            x = "*" if call.star else quote(call.args[0].name)  # type: ignore[union-attr]
            if call.name == "distinct_count":
                column = self.table.column(call.args[0].name)  # type: ignore[union-attr]
                counted, null_value = distinct_value(x, column)
                current = request[column.name]
                selects += [aggregate_sql(call.name, counted), "0", "0", f"max({counted} = ?)"]
                probes.append(null_value if current is None else current)
                continue
            selects += [aggregate_sql(call.name, x), f"count({x})",
                        f"sum({'1' if call.star else x})"]
        sql = f"SELECT {', '.join(selects)} FROM ({rows_sql})"
        stored = db.execute(sql, probes + params).fetchone()
        result: dict[d.Call, Any] = {}
        position = 0
        for call in window.calls:
            agg, count, total = stored[position:position + 3]
            position += 3
            seen = None
            if call.name == "distinct_count":
                seen = stored[position]
                position += 1
            current = 1 if call.star else request[call.args[0].name]  # type: ignore[union-attr]
            result[call] = _combine(call.name, agg, count, total, current, seen)
        return result

    def _visible_rows(self, index: Index, sqlite_index: str, columns: list[str],
                      key_filters: list[str], now_ms: int) -> str:
        """The index's rows for the key that its TTL still keeps, as a SQLite subquery."""
        cols = ", ".join([*(quote(c) for c in columns), "_seq"])
        where = " AND ".join(key_filters) or "1"
        # named, so SQLite never picks a worse index for a window than the one made for it
        # (NOT INDEXED on a WITHOUT ROWID table reads it in its primary key order)
        table = f"{quote(self.sqlite_table)} " + (
            "NOT INDEXED" if sqlite_index == CLUSTERED_KEY
            else f"INDEXED BY {quote(sqlite_index)}")
        ts_col = quote(index.ts)
        abs_keep = f"{ts_col} >= {now_ms - index.ttl_minutes * 60_000}" \
            if index.ttl_minutes else None
        if not index.ttl_latest:
            if abs_keep and index.ttl_type in {"absolute", "absorlat", "absandlat"}:
                where += f" AND {abs_keep}"
            return f"(SELECT {cols} FROM {table} WHERE {where})"
        ranked = (f"(SELECT {cols}, row_number() OVER (ORDER BY {ts_col} DESC, _seq DESC) "
                  f"AS _rank FROM {table} WHERE {where})")
        latest_keep = f"_rank <= {index.ttl_latest}"
        if abs_keep is None or index.ttl_type == "latest":
            keep = latest_keep
        elif index.ttl_type == "absandlat":  # expires only when both limits are passed
            keep = f"({abs_keep} OR {latest_keep})"
        else:
            keep = f"({abs_keep} AND {latest_keep})"
        return f"(SELECT {cols} FROM {ranked} WHERE {keep})"


def _check_request_expr(node: d.Expr, windows: Mapping[str, d.WindowSpec]) -> None:
    match node:
        case d.Call(window=None, name=name) if name in AGGREGATES:
            raise UnsupportedStatementError(f"{name}() without OVER in a deployment")
        case d.Call(window=None, name=name) if name not in SCALAR_FUNCTIONS:
            raise UnsupportedStatementError(
                f"the embedded engine does not implement the function {name}()")
        case d.Call(window=str(window)) if window not in windows:
            raise UnsupportedStatementError(f"window {window!r} is not defined")
        case d.Call(args=args):
            for arg in args:
                _check_request_expr(arg, windows)
        case d.Binary(left=left, right=right):
            _check_request_expr(left, windows)
            _check_request_expr(right, windows)
        case d.Unary(operand=operand) | d.IsNull(operand=operand) | d.Cast(operand=operand):
            _check_request_expr(operand, windows)
        case d.Placeholder():
            raise UnsupportedStatementError("parameters in a deployment")


def _combine(name: str, agg: Any, count: int, total: Any, current: Any, seen: Any) -> Any:
    """The aggregate over (stored window rows) ∪ {request row}."""
    if name == "count":
        return count + (current is not None)
    if name == "distinct_count":  # `seen`: the request's value is among the stored ones
        return agg + (0 if seen else 1)
    if current is None:
        if name == "avg":
            return total / count if count else None
        return agg
    if name == "sum":
        return current if total is None else total + current
    if name == "min":
        return current if agg is None else min(agg, current)
    if name == "max":
        return current if agg is None else max(agg, current)
    if name == "avg":
        return ((total or 0) + current) / (count + 1)
    raise UnsupportedStatementError(f"window function {name}()")


def _evaluate(node: d.Expr, row: Mapping[str, Any], windows: Mapping[d.Call, Any]) -> Any:
    match node:
        case d.ColumnRef(name):
            return row[name]
        case d.Literal(value):
            return value
        case d.Call() if node.window is not None:
            return windows[node]
        case d.Call(name, args):
            return python_scalar(name, [_evaluate(a, row, windows) for a in args])
        case d.Binary(op, left, right):
            return _binary(op, _evaluate(left, row, windows), _evaluate(right, row, windows))
        case d.Unary("not", operand):
            value = _evaluate(operand, row, windows)
            return None if value is None else not value
        case d.Unary(_, operand):
            value = _evaluate(operand, row, windows)
            return None if value is None else -value
        case d.IsNull(operand, negated):
            return (_evaluate(operand, row, windows) is None) != negated
        case d.Cast(operand, type_name):
            return _as_type(_evaluate(operand, row, windows), type_name)
    raise UnsupportedStatementError(f"unsupported expression {node!r}")


def _binary(op: str, left: Any, right: Any) -> Any:
    if op == "and":  # SQL three-valued logic
        if left is False or right is False:
            return False
        return None if left is None or right is None else True
    if op == "or":
        if left is True or right is True:
            return True
        return None if left is None or right is None else False
    if left is None or right is None:
        return None
    if op in {"/", "%"} and right == 0:
        return None
    match op:
        case "+":
            return left + right
        case "-":
            return left - right
        case "*":
            return left * right
        case "/":
            return left / right
        case "%":  # SQL: the sign follows the dividend
            return math.fmod(left, right) if isinstance(left, float) or isinstance(
                right, float) else int(math.fmod(left, right))
        case "=":
            return left == right
        case "!=":
            return left != right
        case "<":
            return left < right
        case "<=":
            return left <= right
        case ">":
            return left > right
        case ">=":
            return left >= right
    raise UnsupportedStatementError(f"operator {op}")


def _as_type(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    if type_name in {"int16", "int32", "int64", "timestamp"}:
        return int(value)
    if type_name in {"float", "double"}:
        return float(value)
    if type_name == "bool":
        return bool(value)
    if type_name == "string":
        return str(value)
    return value
