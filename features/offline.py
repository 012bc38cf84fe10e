"""Batch (offline) execution of OpenMLDB SELECTs on DuckDB over the offline Parquet files.

OpenMLDB's batch engine takes the rows of a window partition one at a time in (ts, storage
order): a row's frame holds the rows in range that came before it, never a later row with the
same timestamp. DuckDB's RANGE frames include all such peers, so each frame is written as a ROWS
frame whose per-row start offset is computed from the range bound first.
"""

from __future__ import annotations

from dataclasses import dataclass

from features import dialect as d
from features.exceptions import UnsupportedStatementError
from features.functions import (
    AGGREGATES,
    SCALAR_FUNCTIONS,
    aggregate_sql,
    distinct_value,
    duckdb_scalar,
)
from features.schema import Column

SEQ = "_seq"  # storage order column of offline files

DUCKDB_TYPES = {
    "bool": "BOOLEAN", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
    "float": "FLOAT", "double": "DOUBLE", "string": "VARCHAR", "timestamp": "BIGINT",
    "date": "DATE",
}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Frame:
    """SQL pieces of one named window."""

    partition_order: str  # "PARTITION BY … ORDER BY ts, _seq"
    frame: str  # "ROWS BETWEEN … AND …" for the rows before the current one (or incl. it)
    includes_current: bool  # False when EXCLUDE CURRENT_TIME splits the current row off


@dataclass(frozen=True)
class OrderKey:
    """One BIGINT that sorts rows like (ts, storage order): (ts - min_ts) * stride + _seq.

    Sorting on one column is much faster in DuckDB than on (ts, _seq), and it lets a
    time-bounded frame be a RANGE frame that never takes a later row with the same ts. The
    engine builds it when the table's time span × row count fits in 63 bits."""

    min_ts: int
    stride: int  # max(_seq) + 1


def build_query(select: d.Select, source: str, output: list[Column],
                table_columns: list[Column], order_keys: dict[str, OrderKey],
                ordered: bool = True) -> str:
    """DuckDB SQL computing `select` over `source` (a relation with the table's columns + _seq),
    with result columns cast to OpenMLDB's output types; rows in storage order if `ordered`.
    `order_keys` has an OrderKey for each window ORDER BY column that can use one."""
    helpers: dict[str, str] = {}
    for ts_column, key in order_keys.items():
        helpers[_key_name(ts_column)] = (f"({quote(ts_column)} - {key.min_ts}) * {key.stride} "
                                         f"+ {SEQ}")
    frames = {name: _frame(spec, k, helpers, order_keys.get(spec.order_by))
              for k, (name, spec) in enumerate(select.windows.items())}
    translator = _Translator(frames, {c.name: c for c in table_columns})
    projections: list[str] = []
    names = iter(output)
    for item in select.items:
        if item.expr is None:  # `*`: every table column, in order
            for name in (c.name for c in table_columns):
                column = next(names)
                projections.append(f"CAST({quote(name)} AS {DUCKDB_TYPES[column.type]}) "
                                   f"AS {quote(column.name)}")
            continue
        column = next(names)
        sql = translator.expr(item.expr)
        projections.append(f"CAST({sql} AS {DUCKDB_TYPES[column.type]}) AS {quote(column.name)}")
    where = f" WHERE {translator.expr(select.where)}" if select.where is not None else ""
    limit = f" LIMIT {select.limit}" if select.limit is not None else ""
    order = f" ORDER BY {SEQ}" if ordered and not translator.plain_aggregates else ""
    # Helpers are computed in dependency order (a later one may use an earlier one).
    base = f"{source}"
    for name, sql in helpers.items():
        base = f"(SELECT *, {sql} AS {name} FROM {base})"
    base += " AS base"
    # Windows see the whole table; WHERE filters the rows they produce (as OpenMLDB does).
    if select.where is not None and select.windows:
        return (f"SELECT * EXCLUDE ({SEQ}) FROM (SELECT {', '.join(projections)}, {SEQ} "
                f"FROM {base}{where}){order}{limit}")
    return f"SELECT {', '.join(projections)} FROM {base}{where}{order}{limit}"


def _key_name(column: str) -> str:
    return quote(f"_key_{column}")


def _frame(spec: d.WindowSpec, k: int, helpers: dict[str, str],
           order_key: OrderKey | None) -> _Frame:
    keys = ", ".join(quote(c) for c in spec.partition_by)
    ts = quote(spec.order_by)
    partition = f"PARTITION BY {keys}"
    order = _key_name(spec.order_by) if order_key else f"{ts}, {SEQ}"
    ordered = f"{partition} ORDER BY {order}"
    limit: str | None = None
    if spec.frame == "rows" and spec.preceding is not None:
        limit = str(spec.preceding)
    elif spec.maxsize is not None:
        limit = str(spec.maxsize - 1)
    if not spec.exclude_current_time and limit is None:
        if spec.preceding is None:
            return _Frame(ordered, "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", True)
        if order_key is not None:
            # key - (preceding * stride + _seq) = (ts - preceding - min_ts) * stride: the
            # frame starts at the first row with ts >= ts - preceding and ends at this row.
            return _Frame(ordered, f"RANGE BETWEEN ({spec.preceding * order_key.stride} + "
                                   f"{SEQ}) PRECEDING AND CURRENT ROW", True)
    rn, before, peers = f"_rn{k}", f"_before{k}", f"_peers{k}"
    helpers[rn] = f"row_number() OVER ({ordered})"
    # rows that came before the current one (storage order among equal timestamps)
    earlier = f"({rn} - 1)"
    if spec.frame == "rows_range" and spec.preceding is not None:
        helpers[before] = (f"count(*) OVER ({partition} ORDER BY {ts} RANGE BETWEEN UNBOUNDED "
                           f"PRECEDING AND {spec.preceding + 1} PRECEDING)")
        earlier = f"({rn} - 1 - {before})"
    if not spec.exclude_current_time:
        count = earlier if limit is None else f"least({earlier}, {limit})"
        return _Frame(ordered, f"ROWS BETWEEN {count} PRECEDING AND CURRENT ROW", True)
    # EXCLUDE CURRENT_TIME: earlier rows with the current timestamp leave the frame.
    helpers[peers] = (f"{rn} - 1 - count(*) OVER ({partition} ORDER BY {ts} RANGE BETWEEN "
                      f"UNBOUNDED PRECEDING AND 1 PRECEDING)")
    others = f"({earlier} - {peers})"
    count = others if limit is None else f"least({others}, {limit})"
    # An empty frame (count = 0) is written with start after end, which DuckDB reads as empty.
    frame = f"ROWS BETWEEN ({peers} + {count}) PRECEDING AND ({peers} + 1) PRECEDING"
    return _Frame(ordered, frame, False)


class _Translator:
    def __init__(self, frames: dict[str, _Frame], columns: dict[str, Column]) -> None:
        self.frames = frames
        self.columns = columns
        self.plain_aggregates = False

    def expr(self, node: d.Expr) -> str:
        match node:
            case d.ColumnRef(name):
                return quote(name)
            case d.Literal(value):
                return _literal(value)
            case d.Binary(op, left, right):
                sql_op = {"and": "AND", "or": "OR"}.get(op, op)
                return f"({self.expr(left)} {sql_op} {self.expr(right)})"
            case d.Unary("not", operand):
                return f"(NOT {self.expr(operand)})"
            case d.Unary(_, operand):
                return f"(-{self.expr(operand)})"
            case d.IsNull(operand, negated):
                return f"({self.expr(operand)} IS {'NOT ' if negated else ''}NULL)"
            case d.Cast(operand, type_name):
                return f"CAST({self.expr(operand)} AS {DUCKDB_TYPES[type_name]})"
            case d.Call() if node.window is not None:
                return self.window_call(node)
            case d.Call(name) if name in AGGREGATES:
                self.plain_aggregates = True
                arg = "*" if node.star else self.expr(node.args[0])
                if name == "distinct_count":
                    arg = self.distinct_argument(node, arg)
                elif node.distinct:
                    arg = f"DISTINCT {arg}"
                return aggregate_sql(name, arg)
            case d.Call(name, args) if name in SCALAR_FUNCTIONS:
                return duckdb_scalar(name, [self.expr(a) for a in args])
            case d.Call(name):
                raise UnsupportedStatementError(
                    f"the embedded engine does not implement the function {name}()")
            case d.Placeholder():
                raise UnsupportedStatementError("parameters in an offline SELECT")
        raise UnsupportedStatementError(f"unsupported expression {node!r}")

    def window_call(self, node: d.Call) -> str:
        assert node.window is not None
        if node.name not in AGGREGATES:
            raise UnsupportedStatementError(
                f"the embedded engine does not implement the window function {node.name}()")
        frame = self.frames.get(node.window)
        if frame is None:
            raise UnsupportedStatementError(f"window {node.window!r} is not defined")
        arg = "*" if node.star else window_argument(node)
        if node.name == "distinct_count":
            arg = self.distinct_argument(node, arg)
        over = f"OVER ({frame.partition_order} {frame.frame})"
        aggregate = aggregate_sql(node.name, arg, over)
        if frame.includes_current:
            return aggregate
        # count(*) counts rows: over the frame without the current row, then plus one
        value = "1" if node.star else arg
        return combine_with_current_sql(node.name, value, aggregate,
                                        f"count({value}) {over}", f"sum({value}) {over}")


    def distinct_argument(self, node: d.Call, arg: str) -> str:
        if not (len(node.args) == 1 and isinstance(node.args[0], d.ColumnRef)):
            raise UnsupportedStatementError("distinct_count() takes one column here")
        return distinct_value(arg, self.columns[node.args[0].name])[0]


@dataclass(frozen=True)
class Outfile:
    """An INTO OUTFILE's target and the options both offline executors take."""

    target: str  # a local folder, or a URL Spark writes to
    mode: str  # error_if_exists | overwrite | append
    file_format: str  # csv | parquet
    header: bool  # csv only


def outfile_of(stmt: d.Select) -> Outfile:
    """The statement's INTO OUTFILE; UnsupportedStatementError for an option it cannot take."""
    assert stmt.outfile is not None
    options = {k.lower(): v for k, v in stmt.outfile_options.items()}
    mode = str(options.get("mode", "error_if_exists")).lower()
    file_format = str(options.get("format", "csv")).lower()
    if file_format not in {"csv", "parquet"}:
        raise UnsupportedStatementError(f"INTO OUTFILE format={file_format!r}")
    if mode not in {"error_if_exists", "overwrite", "append"}:
        raise UnsupportedStatementError(f"INTO OUTFILE mode={mode!r}")
    header = str(options.get("header", True)).lower() in {"true", "1"}
    return Outfile(stmt.outfile.removeprefix("file://"), mode, file_format, header)


def window_argument(node: d.Call) -> str:
    """Window aggregates take a column (the online engine reads it from the index)."""
    if node.distinct:
        raise UnsupportedStatementError(f"{node.name}(DISTINCT ...) over a window")
    if len(node.args) != 1 or not isinstance(node.args[0], d.ColumnRef):
        raise UnsupportedStatementError(
            f"window aggregates over expressions ({node.name}() takes one column here)")
    return quote(node.args[0].name)


def combine_with_current_sql(name: str, x: str, agg: str, count: str, total: str) -> str:
    """The aggregate of (frame without the current row) ∪ {current row}."""
    present = f"(CASE WHEN {x} IS NULL THEN 0 ELSE 1 END)"
    if name == "count":
        return f"({agg} + {present})"
    if name == "sum":
        return f"(CASE WHEN {x} IS NULL THEN {agg} ELSE coalesce({agg}, 0) + {x} END)"
    if name in {"min", "max"}:
        pick = "least" if name == "min" else "greatest"
        return (f"(CASE WHEN {agg} IS NULL THEN {x} WHEN {x} IS NULL THEN {agg} "
                f"ELSE {pick}({agg}, {x}) END)")
    if name == "avg":
        return (f"((coalesce({total}, 0) + coalesce({x}, 0)) / "
                f"nullif({count} + {present}, 0))")
    raise UnsupportedStatementError(f"{name}() over a window with EXCLUDE CURRENT_TIME")


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
