"""Request-mode execution of a deployment against the online table (SQLite).

OpenMLDB request mode: the request row is counted in its own windows but never stored; stored
rows whose timestamp equals the request's are in the window; windows read through the table's
index for their partition keys, so that index's TTL decides which stored rows are visible.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from features import dialect as d
from features.exceptions import CatalogError, UnsupportedStatementError
from features.functions import AGGREGATES, SCALAR_FUNCTIONS, distinct_value, python_scalar
from features.offline import quote, window_argument
from features.schema import INTEGER_RANGES, Column, Index, TableSchema
from features.totals import MEASURES_OF, STAR, WindowTotals

# The name under which a clustered table's own key order stands among its SQLite indexes.
CLUSTERED_KEY = "PRIMARY KEY"


# What each window function needs of the window's stored rows, as SQLite aggregates over them
# (`{request}`: the request's value); `_combine` adds the request row.
_STORED_AGGREGATES: dict[str, tuple[str, ...]] = {
    "count": ("count({x})",),
    "sum": ("sum({x})",),
    "min": ("min({x})",),
    "max": ("max({x})",),
    "avg": ("sum({x})", "count({x})"),
    # over distinct_value() (NULL counts as its type's zero); is the request's value stored?
    "distinct_count": ("count(DISTINCT {x})", "max({x} = {request})"),
}
# An output column's value from the request row's values (in table order) followed by the
# windows' aggregates (in the plan's order of calls).
_Output = Callable[[Sequence[Any]], Any]
# Column types whose request values are always of their Python type (embedded._RequestRows):
# an output of the same type needs no conversion. Not float: a double column keeps ints.
_EXACT_TYPES = {**{type_name: int for type_name in INTEGER_RANGES}, "bool": bool,
                "string": str}


@dataclass(frozen=True)
class _WindowQuery:
    spec: d.WindowSpec
    index: Index
    calls: tuple[d.Call, ...]  # the aggregates computed over this window
    sql: str  # one row: per call the aggregates of _STORED_AGGREGATES


class RequestPlan:
    """A deployment compiled for request mode: every window's aggregates in one SQLite
    statement (one snapshot of the stored rows, one round trip), Python scalars after it.

    `version_sql` selects one value (the store's catalog version) in that same statement, so
    the caller can tell whether the catalog it made the plan from is the one the rows were
    read with.

    The statement's parameters are numbered: ?1…?n are the request row's n columns in table
    order and ?n+1 is now (epoch ms), so a value the statement reads many times (the key, the
    time) is bound once, and the request row's values are the parameters as they are."""

    def __init__(self, select: d.Select, table: TableSchema, sqlite_table: str,
                 output: list[Column], sqlite_indexes: Mapping[str, str],
                 version_sql: str, totals: Mapping[str, WindowTotals] | None = None) -> None:
        """`sqlite_indexes`: the SQLite index each window (by name) reads; `totals`: the
        running totals a window (by name) reads instead when the request is not older than
        its key's newest row (features/totals.py)."""
        self.select = select
        self.table = table
        self.sqlite_table = sqlite_table
        self.output = output
        self.sqlite_indexes = sqlite_indexes
        self.totals = totals or {}
        self._positions = {name: i for i, name in enumerate(table.column_names)}
        self._bound = 0  # the highest parameter number the statement reads
        self.windows = [self._window_query(spec) for spec in select.windows.values()]
        for item in select.items:
            if item.expr is not None:
                _check_request_expr(item.expr, select.windows)
        self.sql = self._statement(version_sql)
        self._aggregates = self._result_positions()
        self._outputs = self._compile_outputs()

    def _value(self, column: str) -> str:
        """The parameter of the request's value of `column`."""
        number = self._positions[column] + 1
        self._bound = max(self._bound, number)
        return f"?{number}"

    def _now_minus(self, amount_ms: int) -> str:
        self._bound = len(self._positions) + 1
        return f"(?{self._bound} - {amount_ms})"

    def _statement(self, version_sql: str) -> str:
        """One statement of the version and every window's stored aggregates, in order: a
        window of one value as a scalar subquery (a third cheaper than joining one-row
        subqueries), a window of several as a subquery in FROM."""
        items, joined = [f"({version_sql})"], []
        for i, window in enumerate(self.windows):
            if sum(len(_STORED_AGGREGATES[call.name]) for call in window.calls) == 1:
                items.append(f"({window.sql})")
            else:
                items.append(f"_w{i}.*")
                joined.append(f"({window.sql}) AS _w{i}")
        return f"SELECT {', '.join(items)}" + (f" FROM {', '.join(joined)}" if joined else "")

    def _window_query(self, spec: d.WindowSpec) -> _WindowQuery:
        calls = tuple(d.calls_over(spec.name, [i.expr for i in self.select.items if i.expr]))
        for call in calls:
            if call.name not in _STORED_AGGREGATES:
                raise UnsupportedStatementError(
                    f"the embedded engine does not implement the window function {call.name}()")
            if not call.star:
                window_argument(call)  # raises for expressions
        wanted = set(spec.partition_by)
        for index in self.table.indexes:
            if set(index.keys) == wanted and index.ts == spec.order_by:
                totals = self.totals.get(spec.name)
                if totals is not None:
                    return self._totals_sql(spec, index, calls, totals)
                return self._window_sql(spec, index, calls)
        raise CatalogError(
            f"table {self.table.name!r} has no index KEY=({', '.join(spec.partition_by)}) "
            f"TS={spec.order_by} for window {spec.name!r}; DEPLOY creates it")

    def _window_sql(self, spec: d.WindowSpec, index: Index,
                    calls: tuple[d.Call, ...]) -> _WindowQuery:
        ts_col, request_ts = quote(spec.order_by), self._value(spec.order_by)
        selects: list[str] = []
        for call in calls:
            x = "*" if call.star else quote(call.args[0].name)  # type: ignore[union-attr]
            request = ""
            if call.name == "distinct_count":
                column = self.table.column(call.args[0].name)  # type: ignore[union-attr]
                x = distinct_value(x, column)[0]
                request = distinct_value(self._value(column.name), column)[0]
            selects.extend(template.format(x=x, request=request)
                           for template in _STORED_AGGREGATES[call.name])
        key_filters: list[str] = []
        for key in spec.partition_by:
            # IS matches a null key too; = where there can be none (the clustered key)
            equals = "=" if self.table.column(key).not_null else "IS"
            key_filters.append(f"{quote(key)} {equals} {self._value(key)}")
        columns = sorted({c.args[0].name for c in calls if not c.star
                          and isinstance(c.args[0], d.ColumnRef)} | {spec.order_by})
        source = self._visible_rows(index, self.sqlite_indexes[spec.name], columns, key_filters)
        frame = [f"{ts_col} {'<' if spec.exclude_current_time else '<='} {request_ts}"]
        if spec.frame == "rows_range" and spec.preceding is not None:
            frame.append(f"{ts_col} >= ({request_ts} - {spec.preceding})")
        limit = spec.preceding if spec.frame == "rows" else (
            spec.maxsize - 1 if spec.maxsize is not None else None)
        rows_sql = f"SELECT * FROM {source} WHERE {' AND '.join(frame)}"
        if limit is not None:
            rows_sql += f" ORDER BY {ts_col} DESC, _seq DESC LIMIT {int(limit)}"
        return _WindowQuery(spec, index, calls, f"SELECT {', '.join(selects)} FROM ({rows_sql})")

    def _totals_sql(self, spec: d.WindowSpec, index: Index, calls: tuple[d.Call, ...],
                    totals: WindowTotals) -> _WindowQuery:
        """The stored aggregates from the key's totals (features/totals.py): the totals alone
        when no row of the key is newer than the request (the online case), else whichever
        reads fewer of the key's rows by its time span: its rows up to the request, or the
        totals minus its rows after it (at its time too under EXCLUDE CURRENT_TIME). The
        key's totals are read once (its time span and each measure's sum: a key prefix sums
        several rows of the table); the rows are read in scalar subqueries, and SQLite
        evaluates only the CASE branch taken."""
        table = totals.table
        keys = table.keys[:totals.prefix]
        ts, request_ts = quote(spec.order_by), self._value(spec.order_by)
        of_key = " AND ".join(f"{quote(k)} = {table.key_value(k, self._value(k))}"
                              for k in keys)
        # IS matches a null key too; = where there can be none
        rows_of_key = " AND ".join(
            f"{quote(k)} {'IS' if k in table.nullable else '='} {self._value(k)}" for k in keys)
        source = f"{quote(self.sqlite_table)} " + (
            "NOT INDEXED" if totals.rows_index == CLUSTERED_KEY
            else f"INDEXED BY {quote(totals.rows_index)}")
        before, after = ("<", ">=") if spec.exclude_current_time else ("<=", ">")
        # the key's totals row, named so that no column of the table can shadow it
        newest, oldest = "_totals._max_ts", "_totals._min_ts"
        sums: dict[str, str] = {}  # each measure's sum over the key, by its column in _totals

        def total(function: str, column: str) -> str:
            measure = table.measure(function, column)
            return f"_totals.{sums.setdefault(measure, f'_sum{len(sums)}')}"

        def of_rows(function: str, column: str, older: bool) -> str:
            """Over the key's rows up to the request (older) or after it, within the key's
            own time span, so a hot first key's other rows are skipped by the index."""
            aggregate = "count(*)" if column == STAR else f"{function}({quote(column)})"
            if older:
                frame = f"{ts} >= {oldest} AND {ts} {before} {request_ts}"
            else:
                frame = f"{ts} {after} {request_ts} AND {ts} <= {newest}"
            return f"(SELECT {aggregate} FROM {source} WHERE {rows_of_key} AND {frame})"

        no_newer = ">" if spec.exclude_current_time else ">="

        def case(function: str, column: str) -> str:
            """One stored aggregate (a sum over no value is NULL)."""
            count = f"coalesce({total('count', column)}, 0)"
            sql = f"CASE WHEN {request_ts} {no_newer} {newest} THEN "
            sql += total(function, column) if function != "count" else count
            sql += f" WHEN {request_ts} - {oldest} <= {newest} - {request_ts} "
            sql += f"THEN {of_rows(function, column, older=True)} ELSE "
            if function == "count":
                sql += f"{count} - {of_rows('count', column, older=False)}"
            else:
                sql += (f"CASE WHEN {count} - {of_rows('count', column, older=False)} = 0 "
                        f"THEN NULL ELSE {total(function, column)} - "
                        f"coalesce({of_rows(function, column, older=False)}, 0) END")
            return sql + " END"

        values: list[str] = []
        for call in calls:
            column = STAR if call.star else call.args[0].name  # type: ignore[union-attr]
            values.extend(case(function, column) for function in MEASURES_OF[call.name])
        read = ", ".join(["max(_max_ts) AS _max_ts", "min(_min_ts) AS _min_ts",
                          *(f"sum({measure}) AS {name}" for measure, name in sums.items())])
        return _WindowQuery(spec, index, calls, f"SELECT {', '.join(values)} FROM "
                            f"(SELECT {read} FROM {quote(table.name)} WHERE {of_key}) AS _totals")

    def _visible_rows(self, index: Index, sqlite_index: str, columns: list[str],
                      key_filters: list[str]) -> str:
        """The index's rows for the key that its TTL still keeps, as a SQLite subquery."""
        cols = ", ".join([*(quote(c) for c in columns), "_seq"])
        where = " AND ".join(key_filters) or "1"
        # named, so SQLite never picks a worse index for a window than the one made for it
        # (NOT INDEXED on a WITHOUT ROWID table reads it in its primary key order)
        table = f"{quote(self.sqlite_table)} " + (
            "NOT INDEXED" if sqlite_index == CLUSTERED_KEY
            else f"INDEXED BY {quote(sqlite_index)}")
        ts_col = quote(index.ts)
        abs_keep = (f"{ts_col} >= {self._now_minus(index.ttl_minutes * 60_000)}"
                    if index.ttl_minutes else None)
        if not index.ttl_latest:
            if abs_keep and index.ttl_type in {"absolute", "absorlat", "absandlat"}:
                return f"(SELECT {cols} FROM {table} WHERE {where} AND {abs_keep})"
            return f"(SELECT {cols} FROM {table} WHERE {where})"
        ranked = (f"(SELECT {cols}, row_number() OVER (ORDER BY {ts_col} DESC, _seq DESC) "
                  f"AS _rank FROM {table} WHERE {where})")
        latest_keep = f"_rank <= {index.ttl_latest}"
        if abs_keep is None or index.ttl_type == "latest":
            return f"(SELECT {cols} FROM {ranked} WHERE {latest_keep})"
        if index.ttl_type == "absandlat":  # expires only when both limits are passed
            keep = f"({abs_keep} OR {latest_keep})"
        else:
            keep = f"({abs_keep} AND {latest_keep})"
        return f"(SELECT {cols} FROM {ranked} WHERE {keep})"

    def _result_positions(self) -> list[tuple[d.Call, int, int, int | None]]:
        """Each aggregate call with where its stored rows' values are in the statement's row
        (after the version), from and to, and its argument's position in the request row
        (None for `*`)."""
        positions = []
        position = 1
        for window in self.windows:
            for call in window.calls:
                width = len(_STORED_AGGREGATES[call.name])
                argument = None if call.star else \
                    self._positions[call.args[0].name]  # type: ignore[union-attr]
                positions.append((call, position, position + width, argument))
                position += width
        return positions

    def _compile_outputs(self) -> list[_Output]:
        """Each output column's value, converted to the column's type."""
        after = len(self._positions)  # the windows' values follow the request row's
        aggregates = {call: after + i for i, (call, *_) in enumerate(self._aggregates)}
        expressions = [expr for item in self.select.items for expr in (
            [d.ColumnRef(name) for name in self.table.column_names] if item.expr is None
            else [item.expr])]
        return [_converted(_compile(expr, self._positions, aggregates), column.type,
                           self._type_of(expr))
                for expr, column in zip(expressions, self.output, strict=True)]

    def _type_of(self, expr: d.Expr) -> str | None:
        """The type of the expression's values where it is sure to be exact, else None."""
        match expr:
            case d.ColumnRef(name) if self.table.column(name).type in _EXACT_TYPES:
                return self.table.column(name).type
            case d.Call(name="count" | "distinct_count") if expr.window is not None:
                return "int64"  # the stored rows' count plus the request row's
        return None

    def execute(self, db: sqlite3.Connection, request: tuple[Any, ...],
                now_ms: int | None = None) -> tuple[Any, tuple[Any, ...]]:
        """The value of `version_sql` and the output row, read in one statement; `request`:
        the request row's values in table order."""
        if self._bound > len(request):  # the statement reads now
            params = (*request, int(time.time() * 1000) if now_ms is None else now_ms)
        else:
            params = request[:self._bound]
        stored = db.execute(self.sql, params).fetchone()
        values = (*request, *[_combine(call.name, stored[start:end],
                                       1 if argument is None else request[argument])
                              for call, start, end, argument in self._aggregates])
        return stored[0], tuple([output(values) for output in self._outputs])


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


def _combine(name: str, stored: Sequence[Any], current: Any) -> Any:
    """The aggregate over (stored window rows) ∪ {request row}, from the stored rows'
    aggregates (_STORED_AGGREGATES) and the request's value."""
    if name == "count":
        return stored[0] + (current is not None)
    if name == "distinct_count":  # a NULL request value counts as its type's zero too
        return stored[0] + (0 if stored[1] else 1)
    if name == "avg":
        total, count = stored
        if current is None:
            return total / count if count else None
        return ((total or 0) + current) / (count + 1)
    agg = stored[0]
    if current is None:
        return agg
    if name == "sum":
        return current if agg is None else agg + current
    if name == "min":
        return current if agg is None else min(agg, current)
    if name == "max":
        return current if agg is None else max(agg, current)
    raise UnsupportedStatementError(f"window function {name}()")


def _compile(node: d.Expr, columns: Mapping[str, int],
             aggregates: Mapping[d.Call, int]) -> _Output:
    """The expression as a function of the request row's values followed by the windows',
    built once; `columns` and `aggregates`: where each column's and window call's value is."""
    match node:
        case d.ColumnRef(name):
            return itemgetter(columns[name])
        case d.Literal(value):
            return lambda values: value
        case d.Call() if node.window is not None:
            return itemgetter(aggregates[node])
        case d.Call(name, [arg]):
            function, argument = python_scalar(name), _compile(arg, columns, aggregates)
            return lambda values: function(argument(values))
        case d.Binary(op, left, right):
            lhs = _compile(left, columns, aggregates)
            rhs = _compile(right, columns, aggregates)
            return lambda values: _binary(op, lhs(values), rhs(values))
        case d.Unary("not", operand):
            inner = _compile(operand, columns, aggregates)
            return lambda values: _not(inner(values))
        case d.Unary(_, operand):
            inner = _compile(operand, columns, aggregates)
            return lambda values: _negate(inner(values))
        case d.IsNull(operand, negated):
            inner = _compile(operand, columns, aggregates)
            return lambda values: (inner(values) is None) != negated
        case d.Cast(operand, type_name):
            return _converted(_compile(operand, columns, aggregates), type_name)
    raise UnsupportedStatementError(f"unsupported expression {node!r}")


def _not(value: Any) -> Any:
    return None if value is None else not value


def _negate(value: Any) -> Any:
    return None if value is None else -value


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


def _converted(value: _Output, type_name: str, known: str | None = None) -> _Output:
    """The expression's value converted to the OpenMLDB type (None stays None); `known`: the
    type its values are sure to have, if any (no conversion when it is the same)."""
    convert: Callable[[Any], Any] | None = None
    if type_name in {"int16", "int32", "int64", "timestamp"}:
        convert = int
    elif type_name in {"float", "double"}:
        convert = float
    elif type_name == "bool":
        convert = bool
    elif type_name == "string":
        convert = str
    if convert is None or (known is not None and _EXACT_TYPES.get(known) is convert):
        return value
    to = convert

    def converted(values: Sequence[Any]) -> Any:
        result = value(values)
        return None if result is None else to(result)

    return converted
