"""Running totals of unbounded windows, kept per key as rows are inserted.

An UNBOUNDED PRECEDING window over an index that keeps every row aggregates all stored rows of
its key up to the request's time. Counting them costs one step per row, and a hot (ip, app) key
of a 10M-row table has tens of thousands. So the embedded engine keeps, per key, the count (and
sum) of all its rows and their first and last time. A request not older than the key's last
row (the online case: a click is scored as it happens) reads the totals alone; an older one
reads the nearer side of the key's time span through an index ordered by time: the rows up to
the request, or the totals minus the rows after it. OpenMLDB pre-aggregates long windows for
the same reason (DEPLOY's `long_windows`).

Windows whose keys nest (ip, app ⊂ ip, app, os) share one totals table, keyed by the widest:
a narrower window sums the rows of its key prefix. One table costs inserts about as much as
the covering index these windows would otherwise need, and they need none.

Exactness: a trigger updates the totals inside the transaction of the rows it counts, so one
statement reads rows and totals from one snapshot. Only count, sum and avg (over integer
columns, whose sums do not depend on the order of addition) are kept: they subtract. Rows
without a time are in no window and in no totals. Rows of such a table are never deleted
(`expire` keeps every row while any index keeps every row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from features import dialect as d
from features.offline import quote
from features.schema import INTEGER_RANGES, Index, TableSchema, nesting_order

# The window functions answered from totals, by the measures each of the plan's stored
# aggregates reads (in the order of online._STORED_AGGREGATES).
MEASURES_OF: dict[str, tuple[str, ...]] = {
    "count": ("count",), "sum": ("sum",), "avg": ("sum", "count"),
}
STAR = "*"  # count(*)
# A NULL key value's stand-in in a totals key (a blob equals no integer, real or string), so
# that rows with NULL keys are counted under their key as the windows' `IS ?` groups them.
NULL_KEY = "X''"


@dataclass(frozen=True)
class TotalsTable:
    """Per key of `keys`, the measures of all rows of SQLite table `table` that have a time
    (a row without one is in no window), and the key's first and last time."""

    table: str
    keys: tuple[str, ...]  # in key order: each window reading it has a prefix of them
    ts: str
    nullable: tuple[str, ...]  # the keys that can be NULL
    measures: tuple[tuple[str, str], ...]  # (count|sum, column or STAR)

    @property
    def name(self) -> str:
        """The totals table's name, also its trigger's."""
        measures = ",".join(f"{f}({c})" for f, c in self.measures)
        return f"{self.table}:totals:{'_'.join(self.keys)}@{self.ts}:{measures}"

    @staticmethod
    def measure(function: str, column: str) -> str:
        return quote(f"{function}:{column}")

    def key_value(self, key: str, value: str) -> str:
        """SQL of the totals key for a value of `key`."""
        return f"coalesce({value}, {NULL_KEY})" if key in self.nullable else value

    def create_statements(self) -> list[str]:
        """The totals table, filled from the rows already stored, and the trigger that keeps
        it."""
        name, table, ts = quote(self.name), quote(self.table), quote(self.ts)
        keys = ", ".join(quote(k) for k in self.keys)
        measures = [self.measure(f, c) for f, c in self.measures]
        names = ", ".join([keys, "_min_ts", "_max_ts", *measures])
        of_rows = ["count(*)" if c == STAR else f"{f}({quote(c)})" for f, c in self.measures]
        key_values = [self.key_value(k, quote(k)) for k in self.keys]
        new_keys = [self.key_value(k, f"NEW.{quote(k)}") for k in self.keys]
        merged = ", ".join([
            "_min_ts = min(_min_ts, excluded._min_ts)", "_max_ts = max(_max_ts, excluded._max_ts)",
            *(f"{m} = {_merge(f, m)}" for (f, _), m in zip(self.measures, measures,
                                                          strict=True))])
        return [
            # keys without a type: values are stored as they are, the NULL stand-in included
            f"CREATE TABLE {name} ({keys}, _min_ts INTEGER, _max_ts INTEGER, "
            f"{', '.join(f'{m} INTEGER' for m in measures)}, PRIMARY KEY ({keys})) WITHOUT ROWID",
            f"INSERT INTO {name} ({names}) SELECT {', '.join(key_values)}, min({ts}), "
            f"max({ts}), {', '.join(of_rows)} FROM {table} WHERE {ts} IS NOT NULL "
            f"GROUP BY {', '.join(key_values)}",
            f"CREATE TRIGGER {name} AFTER INSERT ON {table} WHEN NEW.{ts} IS NOT NULL BEGIN "
            f"INSERT INTO {name} ({names}) VALUES ({', '.join(new_keys)}, NEW.{ts}, NEW.{ts}, "
            f"{', '.join(_one_row(f, c) for f, c in self.measures)}) "
            f"ON CONFLICT ({keys}) DO UPDATE SET {merged}; END",
        ]


def _one_row(function: str, column: str) -> str:
    if column == STAR:
        return "1"
    return f"NEW.{quote(column)} IS NOT NULL" if function == "count" else f"NEW.{quote(column)}"


def _merge(function: str, current: str) -> str:
    """A measure after adding one row's (`excluded.`); a NULL is no value, as in sum()."""
    if function == "count":
        return f"{current} + excluded.{current}"
    return f"coalesce({current} + excluded.{current}, {current}, excluded.{current})"


@dataclass(frozen=True)
class WindowTotals:
    """How a window reads totals: the first `prefix` keys of `table` are its keys; its rows
    before or after a request are read through SQLite index `rows_index`, ordered by ts."""

    table: TotalsTable
    prefix: int
    rows_index: str


def windows_totals(windows: Sequence[tuple[d.WindowSpec, Sequence[d.Call], Index]],
                   schema: TableSchema, sqlite_table: str,
                   ordered_index: Callable[[Sequence[str], str], str | None],
                   ) -> dict[str, WindowTotals]:
    """The totals each window (by name) is answered from; a window that needs its rows has
    none: a bounded frame, a MAXSIZE, an index that lets rows expire, a function totals do
    not keep, or no index ordered by its ts led by some of its keys (`ordered_index`: that
    index's SQLite name, for the keys and ts)."""
    eligible: list[tuple[d.WindowSpec, list[tuple[str, str]], str]] = []
    for spec, calls, index in windows:
        measures = _measures(calls, schema)
        rows_index = ordered_index(spec.partition_by, spec.order_by)
        if (spec.preceding is None and spec.maxsize is None and not index.ttl_minutes
                and not index.ttl_latest and measures is not None and rows_index is not None):
            eligible.append((spec, measures, rows_index))
    key_sets = [set(spec.partition_by) for spec, _, _ in eligible]
    leading = schema.indexes[0].keys
    # (keys in order, ts) → the measures of the windows sharing it
    groups: dict[tuple[tuple[str, ...], str], list[tuple[str, str]]] = {}
    placed: dict[str, tuple[tuple[tuple[str, ...], str], int, str]] = {}
    for spec, measures, rows_index in sorted(eligible, key=lambda e: -len(e[0].partition_by)):
        wanted = set(spec.partition_by)
        group = next((g for g in groups if g[1] == spec.order_by
                      and set(g[0][:len(wanted)]) == wanted), None)
        if group is None:
            group = (nesting_order(spec.partition_by, key_sets, leading), spec.order_by)
            groups[group] = []
        groups[group].extend(m for m in measures if m not in groups[group])
        placed[spec.name] = (group, len(wanted), rows_index)
    tables = {group: TotalsTable(
        sqlite_table, group[0], group[1],
        tuple(k for k in group[0] if not schema.column(k).not_null),
        (("count", STAR), *sorted(m for m in measures if m != ("count", STAR))))
        for group, measures in groups.items()}
    return {name: WindowTotals(tables[group], prefix, rows_index)
            for name, (group, prefix, rows_index) in placed.items()}


def _measures(calls: Sequence[d.Call], schema: TableSchema) -> list[tuple[str, str]] | None:
    """The measures that answer these calls, or None when one needs the rows."""
    measures: list[tuple[str, str]] = []
    for call in calls:
        if call.name not in MEASURES_OF or call.distinct:
            return None
        if call.star:
            column = STAR
        elif isinstance(call.args[0], d.ColumnRef):
            column = call.args[0].name
            if call.name != "count" and schema.column(column).type not in INTEGER_RANGES:
                return None
        else:
            return None
        # a sum needs its count: a sum over no value is NULL
        for function in ("count", *MEASURES_OF[call.name]):
            if (function, column) not in measures:
                measures.append((function, column))
    return measures
