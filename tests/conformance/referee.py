"""The conformance referee: one query, one data set, FraudFlow's embedded engine against
OpenMLDB's own batch engine (openmldb-batch on Spark), compared row by row.

Every table has a `rid` column (the input row's number) and every query selects it, so rows
are joined on their input row. OpenMLDB takes rows with equal timestamps in no defined order
(whatever Spark's shuffle delivers), so a cell is only compared exactly where the engine's
answer cannot depend on that order; the analysis below says which cells those are:

- a row *tied* in a window (another row of its partition has its timestamp) gets a frame that
  depends on the order among the tied rows, unless the window has EXCLUDE CURRENT_TIME (then
  the frame is the earlier timestamps plus the row itself: order-free);
- a count-limited frame (ROWS n, MAXSIZE) whose first row shares its timestamp with the row
  just outside it takes one of several equal-timestamp rows: also order-dependent.

Order-free cells must be equal, value and type. Order-dependent cells are compared as
multisets per column within each tie group (rows of one partition with one timestamp). That
multiset is fixed whatever the order only for counts of rows (count(*), count(col) where no
tied row has a NULL col): tied rows see frames of 1, 2, … k of them. (A row alone in its
group, order-dependent through a count-limited frame that keeps one of some tied earlier
rows, keeps a fixed count(*) but not a fixed count(col): those rows' col may be NULL.) Those
must be equal; for other aggregates (a running sum over tied rows depends on which comes
first) the agreement is measured and reported, not required.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.spark.runtime import BatchEngine
from features import dialect as d
from features import spark_offline
from features.connection import connect_embedded
from features.schema import Column, TableSchema

ROW_ID = "rid"


@dataclass
class Comparison:
    """What one query over one data set showed."""

    query: str
    rows: int
    columns: list[Column]  # the compiler's output schema (both engines are held to it)
    engine_types: list[Column]  # what OpenMLDB's batch engine produced
    free_cells: int = 0  # cells whose value cannot depend on the order of tied rows
    free_mismatches: list[tuple[int, str, Any, Any]] = field(default_factory=list)
    tied_cells: int = 0
    tie_groups: int = 0
    tie_group_mismatches: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # tie groups of aggregates whose multiset itself depends on the order (reported only)
    order_sensitive_groups: int = 0
    order_sensitive_groups_equal: int = 0
    rows_without_tie: int = 0  # rows whose every cell is order-free
    rows_without_tie_equal: int = 0
    rows_equal: int = 0  # all cells equal, order-free or not
    request_rows: int = 0  # request mode: rows compared (rows without a tie)
    request_mismatches: list[tuple[int, str, Any, Any]] = field(default_factory=list)

    @property
    def types_equal(self) -> bool:
        return [c.type for c in self.columns] == [c.type for c in self.engine_types]

    def assert_conforms(self) -> None:
        assert self.types_equal, (self.query, self.columns, self.engine_types)
        assert not self.free_mismatches, (self.query, self.free_mismatches[:10])
        assert not self.tie_group_mismatches, (self.query, self.tie_group_mismatches[:10])
        assert not self.request_mismatches, (self.query, self.request_mismatches[:10])

    def record(self) -> dict[str, Any]:
        return {"query": " ".join(self.query.split())[:120], "rows": self.rows,
                "rows_equal": self.rows_equal, "rows_without_tie": self.rows_without_tie,
                "rows_without_tie_equal": self.rows_without_tie_equal,
                "types_equal": self.types_equal, "tie_groups": self.tie_groups,
                "tie_groups_equal": self.tie_groups - len(self.tie_group_mismatches),
                "order_sensitive_groups": self.order_sensitive_groups,
                "order_sensitive_groups_equal": self.order_sensitive_groups_equal,
                "request_rows": self.request_rows,
                "request_rows_equal": self.request_rows - len(
                    {m[0] for m in self.request_mismatches})}

    def summary(self) -> str:
        return (f"{self.rows} rows: {self.rows_equal} equal in every column; "
                f"{self.rows_without_tie_equal} of {self.rows_without_tie} rows without a tie "
                f"equal; {self.tie_groups} tie groups, "
                f"{self.tie_groups - len(self.tie_group_mismatches)} equal as multisets "
                f"(+{self.order_sensitive_groups_equal} of {self.order_sensitive_groups} "
                f"order-sensitive); "
                f"request mode {self.request_rows - len(self.request_mismatches)} of "
                f"{self.request_rows}")


class Referee:
    """Runs queries on both engines over data sets loaded into one embedded store."""

    def __init__(self, engine: BatchEngine, root: Path) -> None:
        self.engine = engine
        self.root = root
        self.results: list[dict[str, Any]] = []  # one record per comparison, for the report

    def load(self, name: str, ddl: str, data: pd.DataFrame) -> Dataset:
        """A store with one table (`ddl`, which must have `rid`) holding `data` offline, in
        the frame's row order (its storage order). Timestamps are epoch ms."""
        folder = self.root / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        conn = connect_embedded(f"embedded://{folder / 'store'}", "db")
        cursor = conn.cursor()
        cursor.execute("CREATE DATABASE db")
        cursor.execute("USE db")
        cursor.execute(ddl)
        table = d.parse(ddl)
        assert isinstance(table, d.CreateTable)
        schema = conn.store.table("db", table.name)
        frame = data[[c.name for c in schema.columns]].reset_index(drop=True)
        if ROW_ID in frame:
            assert (frame[ROW_ID].to_numpy() == np.arange(len(frame))).all()
        source = folder / "input.parquet"
        pq.write_table(_arrow(frame, schema), source)
        cursor.execute(f"LOAD DATA INFILE '{source}' INTO TABLE {table.name} "
                       "OPTIONS(format='parquet', mode='overwrite')")
        parts = sorted((folder / "store" / "offline" / "db" / table.name).glob("part-*.parquet"))
        self.engine.register(table.name, spark_offline.table_frame(self.engine, schema, parts),
                             "db")
        return Dataset(self, name, conn, schema, frame, folder, ddl)


@dataclass
class Dataset:
    referee: Referee
    name: str
    conn: Any
    schema: TableSchema
    frame: pd.DataFrame
    folder: Path
    ddl: str

    def compare(self, sql: str, request_mode: bool = False) -> Comparison:
        """Run `sql` (which selects `rid` first) on both engines and compare."""
        select = d.parse(sql)
        assert isinstance(select, d.Select)
        assert select.items[0].expr == d.ColumnRef(ROW_ID), "queries select rid first"
        cursor = self.conn.cursor()
        cursor.execute("SET @@execute_mode='offline'")
        ours = cursor.execute(sql).fetchall()
        columns = [Column(c[0], c[1]) for c in cursor.description]
        real_frame = spark_offline.to_store_encoding(self.referee.engine.sql(sql))
        engine_types = spark_offline.engine_types(self.referee.engine.sql(sql))
        out = self.folder / "real"
        shutil.rmtree(out, ignore_errors=True)
        real_frame.write.mode("overwrite").parquet(str(out))
        real_table = pq.read_table(out)
        real = {row[0]: row for row in zip(*(real_table.column(i).to_pylist()
                                               for i in range(real_table.num_columns)),
                                           strict=True)}
        comparison = Comparison(sql, len(ours), columns, engine_types)
        assert len(real) == len(ours), (sql, len(real), len(ours))
        dependent = order_dependent_cells(select, self.frame, [c.name for c in columns])
        _compare_rows(comparison, ours, real, columns, dependent, select, self.frame)
        if request_mode:
            _compare_requests(comparison, self, select, sql, real, columns, dependent)
        self.referee.results.append({"data": self.name, **comparison.record()})
        return comparison


def _arrow(frame: pd.DataFrame, schema: TableSchema) -> pa.Table:
    types = {"bool": pa.bool_(), "int16": pa.int16(), "int32": pa.int32(),
             "int64": pa.int64(), "timestamp": pa.int64(), "float": pa.float32(),
             "double": pa.float64(), "string": pa.string(), "date": pa.date32()}
    return pa.Table.from_pandas(
        frame, schema=pa.schema([(c.name, types[c.type]) for c in schema.columns]),
        preserve_index=False)


# --- which cells may depend on the order of tied rows ---------------------------------------


def windows_of(expr: d.Expr | None) -> set[str]:
    found: set[str] = set()

    def visit(node: d.Expr) -> None:
        match node:
            case d.Call(window=str(window), args=args):
                found.add(window)
                for arg in args:
                    visit(arg)
            case d.Call(args=args):
                for arg in args:
                    visit(arg)
            case d.Binary(left=left, right=right):
                visit(left)
                visit(right)
            case d.Unary(operand=operand) | d.IsNull(operand=operand) | d.Cast(operand=operand):
                visit(operand)

    if expr is not None:
        visit(expr)
    return found


def _partition_keys(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """One hashable key per row for a window's PARTITION BY (nulls are a key of their own)."""
    parts = [frame[k].astype(object).where(frame[k].notna(), None) for k in keys]
    return pd.Series(list(zip(*parts, strict=True)), index=frame.index)


def window_dependence(spec: d.WindowSpec, frame: pd.DataFrame) -> tuple[np.ndarray, pd.Series]:
    """(rows whose frame in `spec` depends on the order of tied rows, each row's tie group)."""
    keys = _partition_keys(frame, spec.partition_by)
    ts = frame[spec.order_by].to_numpy(dtype=np.int64)
    group = pd.Series(list(zip(keys, ts, strict=True)), index=frame.index)
    tied = group.map(group.value_counts()).to_numpy() > 1
    dependent = tied & (not spec.exclude_current_time)
    limit = spec.preceding if spec.frame == "rows" else (
        spec.maxsize - 1 if spec.maxsize is not None else None)
    if limit is not None:
        dependent |= _boundary_splits(spec, keys, ts, limit)
    return dependent, group


def _boundary_splits(spec: d.WindowSpec, keys: pd.Series, ts: np.ndarray,
                     limit: int) -> np.ndarray:
    """Rows whose count-limited frame keeps `limit` earlier rows and the first kept row shares
    its timestamp with the first row left out: which of them is kept is the tie order's."""
    out = np.zeros(len(ts), dtype=bool)
    if limit == 0:
        return out  # no earlier row is kept: nothing to choose
    for members in pd.Series(np.arange(len(ts))).groupby(keys.to_numpy(), sort=False).groups \
            .values():
        index = np.asarray(members)
        sorted_idx = index[np.argsort(ts[index], kind="stable")]
        sorted_ts = ts[sorted_idx]
        if spec.exclude_current_time:  # the earlier rows are those of earlier timestamps
            ends = np.searchsorted(sorted_ts, sorted_ts, side="left")
        else:  # those before it (for a tied row that is order-dependent anyway)
            ends = np.arange(len(sorted_ts))
        starts = np.zeros(len(sorted_ts), dtype=np.int64)
        if spec.frame == "rows_range" and spec.preceding is not None:
            starts = np.searchsorted(sorted_ts, sorted_ts - spec.preceding, side="left")
        first = ends - limit
        cut = first > starts
        split = np.zeros(len(sorted_ts), dtype=bool)
        split[cut] = sorted_ts[first[cut] - 1] == sorted_ts[first[cut]]
        out[sorted_idx] = split
    return out


def order_dependent_cells(select: d.Select, frame: pd.DataFrame,
                          names: Sequence[str]) -> dict[str, tuple[np.ndarray, pd.Series]]:
    """Per output column: (rows where its value may depend on tie order, the rows' tie group
    for the multiset comparison)."""
    per_window = {name: window_dependence(spec, frame) for name, spec in select.windows.items()}
    result: dict[str, tuple[np.ndarray, pd.Series]] = {}
    position = 0
    for item in select.items:
        if item.expr is None:
            position += len(frame.columns)
            continue
        used = sorted(windows_of(item.expr))
        dependent = np.zeros(len(frame), dtype=bool)
        groups = pd.Series([()] * len(frame), index=frame.index)
        for window in used:
            dependent |= per_window[window][0]
            groups = groups.combine(per_window[window][1], lambda a, b: (*a, b))
        result[names[position]] = (dependent, groups)
        position += 1
    return result


def counted_column(expr: d.Expr | None) -> str | None:
    """For `count(*) OVER w` '*', for `count(col) OVER w` col; else None."""
    if isinstance(expr, d.Call) and expr.name == "count" and expr.window is not None:
        if expr.star:
            return "*"
        if len(expr.args) == 1 and isinstance(expr.args[0], d.ColumnRef):
            return expr.args[0].name
    return None


# --- comparing ------------------------------------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """Equal in value and Python type; doubles added in another order may differ in the last
    bits."""
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (
            math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _compare_rows(comparison: Comparison, ours: Sequence[tuple[Any, ...]],
                  real: Mapping[Any, tuple[Any, ...]], columns: Sequence[Column],
                  dependent: Mapping[str, tuple[np.ndarray, pd.Series]], select: d.Select,
                  frame: pd.DataFrame) -> None:
    names = [c.name for c in columns]
    free_rows = np.ones(len(ours), dtype=bool)
    for name in names:
        if name in dependent:
            free_rows &= ~dependent[name][0]
    tie_values: dict[tuple[str, Any], tuple[list[Any], list[Any], list[int]]] = {}
    counted = {}
    position = 0
    for item in select.items:
        if item.expr is None:
            position += len(frame.columns)
            continue
        counted[names[position]] = counted_column(item.expr)
        position += 1
    for ours_row in ours:
        rid = ours_row[0]
        real_row = real[rid]
        all_equal = True
        for position, name in enumerate(names):
            a, b = ours_row[position], real_row[position]
            equal = same_value(a, b)
            all_equal &= equal
            mask_groups = dependent.get(name)
            if mask_groups is not None and mask_groups[0][rid]:
                comparison.tied_cells += 1
                bucket = tie_values.setdefault((name, mask_groups[1][rid]), ([], [], []))
                bucket[0].append(a)
                bucket[1].append(b)
                bucket[2].append(rid)
                continue
            comparison.free_cells += 1
            if not equal:
                comparison.free_mismatches.append((rid, name, a, b))
        comparison.rows_equal += all_equal
        if free_rows[rid]:
            comparison.rows_without_tie += 1
            comparison.rows_without_tie_equal += all_equal
    for (name, group), (a_values, b_values, rids) in tie_values.items():
        equal = _multiset(a_values) == _multiset(b_values)
        column = counted.get(name)
        # A lone row here is order-dependent only through its count-limited frame: which of
        # some tied earlier rows it keeps. Their count is fixed, their NULLs are not.
        fixed = column == "*" or (column is not None and len(rids) > 1
                                  and frame[column].iloc[rids].notna().all())
        if not fixed:
            comparison.order_sensitive_groups += 1
            comparison.order_sensitive_groups_equal += equal
            continue
        comparison.tie_groups += 1
        if not equal:
            comparison.tie_group_mismatches.append((name, group))


def _multiset(values: Iterable[Any]) -> Counter[Any]:
    return Counter(round(v, 9) if isinstance(v, float) else v for v in values)


def _compare_requests(comparison: Comparison, dataset: Dataset, select: d.Select, sql: str,
                      real: Mapping[Any, tuple[Any, ...]], columns: Sequence[Column],
                      dependent: Mapping[str, tuple[np.ndarray, pd.Series]]) -> None:
    """Request mode: each row's features requested over the rows stored before it (rows
    streamed in time order) == the real engine's offline row, on rows without a tie."""
    folder = dataset.folder / "online"
    shutil.rmtree(folder, ignore_errors=True)  # an empty online table for every query
    conn = connect_embedded(f"embedded://{folder}", "db")
    cursor = conn.cursor()
    cursor.execute("CREATE DATABASE db")
    cursor.execute("USE db")
    cursor.execute(dataset.ddl)
    name = "conformance"
    cursor.execute(f"DEPLOY {name} {sql}")
    cursor.execute("SET @@execute_mode='online'")
    schema = dataset.schema
    frame = dataset.frame
    ts_column = next(iter(select.windows.values())).order_by if select.windows else ROW_ID
    streamed = frame.sort_values([ts_column, ROW_ID], kind="stable")
    insert = (f"INSERT INTO {schema.name} VALUES "
              f"({', '.join('?' for _ in schema.columns)})")
    free = np.ones(len(frame), dtype=bool)
    for mask, _ in dependent.values():
        free &= ~mask
    names = [c.name for c in columns]
    ts_position = schema.column_names.index(ts_column)
    records = streamed.astype(object).where(streamed.notna(), None).itertuples(index=False)
    for record in records:
        row = tuple(_plain(v) for v in record)
        rid = row[schema.column_names.index(ROW_ID)]
        # the clock at the click's own time: index TTLs keep what they kept then
        got = conn.store.request("db", name, row, now_ms=row[ts_position]).rows[0]
        cursor.executemany(insert, [row])
        if not free[rid]:
            continue
        comparison.request_rows += 1
        expected = real[rid]
        for position, column in enumerate(names):
            if not same_value(got[position], expected[position]):
                comparison.request_mismatches.append((rid, column, got[position],
                                                      expected[position]))
    conn.commit()
    conn.close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
