"""The embedded OpenMLDB engine: the statements the pipeline issues, with OpenMLDB semantics,
on one machine without a server.

Storage (one directory per store):
- `online.sqlite3` (WAL): the catalog, online tables and consumer offsets. SQLite gives durable
  transactions shared by separate processes: ingest consumers write while predict-server
  workers read, and offsets commit in the same transaction as the rows they cover.
  A table whose first index's key and ts columns are NOT NULL is stored clustered by that
  index (a WITHOUT ROWID table keyed by keys, ts, `_seq`) and each batch is inserted grouped
  by key: one B-tree fewer to update per row and neighbouring pages per batch, about a third
  faster than a rowid table with the same index. Other tables keep a rowid table, as SQLite
  primary keys cannot hold nulls. Unbounded windows that only count, sum or average read
  running totals per key instead of their rows (features/totals.py), kept by triggers.
- `offline/<db>/<table>/part-*.parquet`: offline tables, queried with DuckDB; each part
  carries a `_seq` column so equal timestamps keep their storage order.
"""

from __future__ import annotations

import glob as globbing
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from core.clock import UTC8_OFFSET_MS
from features import compiler, spark_offline
from features import dialect as d
from features.exceptions import (
    CatalogError,
    DataError,
    FeatureStoreError,
    SQLValidationError,
    StoreUnavailableError,
    UnsupportedStatementError,
)
from features.offline import DUCKDB_TYPES, SEQ, OrderKey, build_query, outfile_of, quote
from features.online import CLUSTERED_KEY, RequestPlan
from features.schema import INTEGER_RANGES, Column, Index, TableSchema, nesting_order
from features.totals import WindowTotals, windows_totals

_CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS _catalog (
    kind TEXT NOT NULL, db TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, db, name));
CREATE TABLE IF NOT EXISTS _catalog_version (id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL);
INSERT OR IGNORE INTO _catalog_version VALUES (1, 0);
CREATE TABLE IF NOT EXISTS _offline_parts (db TEXT NOT NULL, name TEXT NOT NULL,
    rows INTEGER NOT NULL, PRIMARY KEY (db, name));
CREATE TABLE IF NOT EXISTS _consumer_offsets (
    consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, PRIMARY KEY (consumer_group, topic, partition));
"""
# The next storage-order number of each clustered table (a rowid table numbers rows itself).
_ROW_SEQ_DDL = """CREATE TABLE IF NOT EXISTS _row_seq (tbl TEXT PRIMARY KEY,
    next INTEGER NOT NULL)"""
_CATALOG_VERSION_SQL = "SELECT version FROM _catalog_version"
# Each attempt of a request that finds the catalog changed under its plan makes it again.
_REQUEST_ATTEMPTS = 3
_SQLITE_TYPES = {
    "bool": "INTEGER", "int16": "INTEGER", "int32": "INTEGER", "int64": "INTEGER",
    "timestamp": "INTEGER", "float": "REAL", "double": "REAL", "string": "TEXT", "date": "TEXT",
}


@dataclass
class Session:
    """Per-connection state, as an OpenMLDB client session has."""

    db: str | None = None
    execute_mode: str = "offline"
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    rowcount: int = -1


def _empty(rowcount: int = -1) -> Result:
    return Result([], [], rowcount)


class EmbeddedStore:
    """One embedded OpenMLDB instance rooted at a directory (safe to open from many processes;
    one instance per thread)."""

    def __init__(self, root: Path, spark_master: str | None = None) -> None:
        """`spark_master` set: offline SELECTs run on OpenMLDB's batch engine on that Spark
        master (features/spark_offline.py) instead of DuckDB."""
        self.root = root
        self.spark_master = spark_master
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "online.sqlite3", timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives power loss, not only a killed process.
        self.db.execute("PRAGMA synchronous=FULL")
        # Index pages of a million-row table do not fit SQLite's 2 MB default cache; reading
        # them through a shared memory map (and a larger private cache for the writer's index
        # updates) keeps inserts and window queries off read() calls.
        self.db.execute(f"PRAGMA mmap_size={1 << 30}")
        self.db.execute(f"PRAGMA cache_size={-64 * 1024}")
        # Checkpoint the WAL every ~40 MB rather than 4 MB: batches of index updates touch
        # many pages, and each checkpoint rewrites and syncs them all.
        self.db.execute("PRAGMA wal_autocheckpoint=10000")
        # Creating the catalog takes the write lock: only do it for a new store, so opening a
        # store never waits for a writer's open transaction.
        if not self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = '_catalog_version'").fetchone():
            self.db.executescript(f"BEGIN IMMEDIATE; {_CATALOG_DDL} COMMIT;")
        self._in_transaction = False
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._plans: dict[tuple[str, str], tuple[RequestPlan, _RequestRows]] = {}
        self._plans_version = -1
        self._lock = threading.Lock()

    # --- transactions (DB-API: changes are committed by commit()) ---------------------------

    def begin(self) -> None:
        if not self._in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True

    def commit(self) -> None:
        if self._in_transaction:
            self.db.execute("COMMIT")
            self._in_transaction = False

    def rollback(self) -> None:
        if self._in_transaction:
            self.db.execute("ROLLBACK")
            self._in_transaction = False

    def close(self) -> None:
        self.rollback()
        self.db.close()
        if self._duck is not None:
            self._duck.close()

    # --- catalog ----------------------------------------------------------------------------

    def _catalog_get(self, kind: str, db: str, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT body FROM _catalog WHERE kind=? AND db=? AND name=?",
                              (kind, db, name)).fetchone()
        return json.loads(row[0]) if row else None

    def _catalog_put(self, kind: str, db: str, name: str, body: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO _catalog VALUES (?, ?, ?, ?)",
                        (kind, db, name, json.dumps(body)))
        self.db.execute("UPDATE _catalog_version SET version = version + 1")

    def _catalog_delete(self, kind: str, db: str, name: str) -> None:
        self.db.execute("DELETE FROM _catalog WHERE kind=? AND db=? AND name=?", (kind, db, name))
        self.db.execute("UPDATE _catalog_version SET version = version + 1")

    def _names(self, kind: str, db: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT name FROM _catalog WHERE kind=? AND db=? ORDER BY name", (kind, db))]

    def table(self, db: str, name: str) -> TableSchema:
        body = self._catalog_get("table", db, name)
        if body is None:
            raise CatalogError(f"table {db}.{name} does not exist")
        return TableSchema.from_json(body)

    def tables(self, db: str) -> dict[str, TableSchema]:
        return {name: self.table(db, name) for name in self._names("table", db)}

    def has_database(self, db: str) -> bool:
        return self._catalog_get("database", "", db) is not None

    def _require_db(self, session: Session, db: str | None) -> str:
        name = db or session.db
        if name is None:
            raise CatalogError("no database selected: run USE <db> or name the database")
        if not self.has_database(name):
            raise CatalogError(f"database {name} does not exist")
        return name

    # --- statements -------------------------------------------------------------------------

    def execute(self, sql: str, session: Session, params: Sequence[Any] = ()) -> Result:
        statement = d.parse(sql)
        match statement:
            case d.CreateDatabase(name, if_not_exists):
                return self._create_database(name, if_not_exists)
            case d.UseDatabase(name):
                self._require_db(session, name)
                session.db = name
                return _empty()
            case d.CreateTable():
                return self._create_table(statement, session)
            case d.DropTable(db, name, if_exists):
                return self._drop_table(self._require_db(session, db), name, if_exists)
            case d.SetVariable(name, value):
                return self._set(session, name, value)
            case d.LoadData():
                return self._load_data(statement, session)
            case d.Insert():
                return self.insert_many(sql, [params], session, statement)
            case d.Select():
                return self._select(statement, session)
            case d.Deploy():
                return self._deploy(statement, session)
            case d.DropDeployment(db, name):
                return self._drop_deployment(self._require_db(session, db), name)
            case d.Show(what):
                return self._show(what, session)
        raise UnsupportedStatementError(f"statement {statement!r}")

    def _create_database(self, name: str, if_not_exists: bool) -> Result:
        def create() -> None:
            # checked inside the write transaction: processes starting together race here
            if self.has_database(name):
                if if_not_exists:
                    return
                raise CatalogError(f"database {name} already exists")
            self._catalog_put("database", "", name, {})

        self._autocommit(create)
        return _empty()

    def _create_table(self, stmt: d.CreateTable, session: Session) -> Result:
        db = self._require_db(session, stmt.db)
        names = [c.name for c in stmt.columns]
        if len(set(names)) != len(names):
            raise CatalogError(f"table {stmt.name} repeats a column name")
        for index in stmt.indexes:
            for col in (*index.keys, index.ts):
                if col not in names:
                    raise CatalogError(f"index column {col!r} is not a column of {stmt.name}")
        indexes = stmt.indexes or (Index((names[0],), _first_timestamp(stmt.columns)),)
        schema = TableSchema(stmt.name, stmt.columns, indexes)
        table = _sqlite_table(db, stmt.name)

        def create() -> None:
            # checked inside the write transaction: processes starting together race here
            if self._catalog_get("table", db, stmt.name) is not None:
                if stmt.if_not_exists:
                    return
                raise CatalogError(f"table {db}.{stmt.name} already exists")
            columns = ", ".join(
                f"{quote(c.name)} {_SQLITE_TYPES[c.type]}{' NOT NULL' if c.not_null else ''}"
                for c in schema.columns)
            primary = schema.indexes[0]
            secondary = schema.indexes
            if all(schema.column(c).not_null for c in (*primary.keys, primary.ts)):
                key = ", ".join(quote(c) for c in (*primary.keys, primary.ts, "_seq"))
                self.db.execute(f"CREATE TABLE {quote(table)} ({columns}, "
                                f"_seq INTEGER NOT NULL, PRIMARY KEY ({key})) WITHOUT ROWID")
                self.db.execute(_ROW_SEQ_DDL)
                self.db.execute("INSERT OR REPLACE INTO _row_seq VALUES (?, 0)", (table,))
                secondary = secondary[1:]
            else:
                self.db.execute(
                    f"CREATE TABLE {quote(table)} (_seq INTEGER PRIMARY KEY, {columns})")
            for index in secondary:
                self._create_sqlite_index(table, index)
            self._catalog_put("table", db, stmt.name, schema.to_json())

        self._autocommit(create)
        return _empty()

    def _create_sqlite_index(self, table: str, index: Index) -> None:
        self._create_physical(table, [*index.keys, index.ts])

    def _create_physical(self, table: str, columns: list[str]) -> str:
        name = f"{table}:{'_'.join(columns)}"
        cols = ", ".join(quote(c) for c in columns)
        self.db.execute(f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} ({cols})")
        return name

    def _clustered_key(self, table: str) -> list[str]:
        """The primary key columns of a clustered table (empty for a rowid table)."""
        if not any(origin == "pk" for *_, origin, _partial in
                   self.db.execute(f"PRAGMA index_list({quote(table)})")):
            return []
        info = self.db.execute(f"PRAGMA table_info({quote(table)})").fetchall()
        return [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]

    def _physical_indexes(self, table: str) -> dict[str, list[str]]:
        """Each SQLite index by name with its columns; a clustered table's own key order is
        one of them (CLUSTERED_KEY), holding every column."""
        indexes: dict[str, list[str]] = {}
        key = self._clustered_key(table)
        if key:
            others = [r[1] for r in self.db.execute(f"PRAGMA table_info({quote(table)})")
                      if r[1] not in key]
            indexes[CLUSTERED_KEY] = [*key, *others]
        names = [r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL ORDER BY name", (table,))]
        indexes.update({name: [r[2] for r in self.db.execute(
            f"PRAGMA index_info({quote(name)})")] for name in names})
        return indexes

    def _physical_for(self, table: str, keys: Sequence[str], ts: str, ordered: bool,
                      covering: Sequence[str] = ()) -> str | None:
        """The SQLite index a window reads: led by its keys then ts when it is time-bounded
        or row-limited (an unbounded window reads all rows of its keys, in any order); one
        that also holds the aggregated columns if there is one, so no table row is read."""
        fallback = None
        for name, columns in self._physical_indexes(table).items():
            if set(columns[:len(keys)]) != set(keys):
                continue
            if ordered and columns[len(keys):len(keys) + 1] != [ts]:
                continue
            if set(covering) <= set(columns):
                return name
            fallback = fallback or name
        return fallback

    def _ensure_physical_indexes(self, table: str, select: d.Select, schema: TableSchema,
                                 from_totals: set[str]) -> None:
        """SQLite indexes for the deployment's windows but those answered from totals (by
        name), each holding the columns its windows aggregate. Every index slows inserts, so
        unbounded windows share one index when their keys nest (ip ⊂ ip,app ⊂ ip,app,os), and
        an index that is a prefix of another goes."""
        unbounded: list[d.WindowSpec] = []
        for spec in select.windows.values():
            if spec.name in from_totals:
                continue
            covering = _aggregated_columns(select, spec)
            if _needs_order(spec, schema):
                found = self._physical_for(table, spec.partition_by, spec.order_by, True,
                                           covering)
                if found is None or not set(covering) <= set(
                        self._physical_indexes(table)[found]):
                    self._create_physical(table, [*spec.partition_by, spec.order_by,
                                                  *covering])
            else:
                unbounded.append(spec)
        key_sets = [set(spec.partition_by) for spec in unbounded]
        shared_cover = sorted({c for spec in unbounded for c in _aggregated_columns(select, spec)})
        for spec in sorted(unbounded, key=lambda w: -len(w.partition_by)):
            covering = _aggregated_columns(select, spec)
            found = self._physical_for(table, spec.partition_by, spec.order_by, False, covering)
            if found is None or not set(covering) <= set(self._physical_indexes(table)[found]):
                keys = nesting_order(spec.partition_by, key_sets, schema.indexes[0].keys)
                self._create_physical(table, [*keys, spec.order_by,
                                              *(c for c in shared_cover if c not in keys)])
        indexes = self._physical_indexes(table)
        for name, columns in indexes.items():
            if name != CLUSTERED_KEY and any(
                    other != name and len(cols) > len(columns) and cols[:len(columns)] == columns
                    for other, cols in indexes.items()):
                self.db.execute(f"DROP INDEX {quote(name)}")

    def _windows_totals(self, select: d.Select, schema: TableSchema,
                        table: str) -> dict[str, WindowTotals]:
        """The running totals each window (by name) can be answered from."""
        exprs = [item.expr for item in select.items if item.expr is not None]
        windows = []
        for spec in select.windows.values():
            index = next((i for i in schema.indexes if set(i.keys) == set(spec.partition_by)
                          and i.ts == spec.order_by), None)
            if index is not None:
                windows.append((spec, d.calls_over(spec.name, exprs), index))
        physical = self._physical_indexes(table)

        def ordered_index(keys: Sequence[str], ts: str) -> str | None:
            """The index ordered by ts after the most leading columns that are all keys."""
            best, best_width = None, 0
            for name, columns in physical.items():
                width = columns.index(ts) if ts in columns else 0
                if width > best_width and set(columns[:width]) <= set(keys):
                    best, best_width = name, width
            return best

        return windows_totals(windows, schema, table, ordered_index)

    def _ensure_totals(self, windows: Iterable[WindowTotals]) -> None:
        """The totals tables these windows read, made from the rows stored so far, in the
        deploy's transaction; one that exists has been kept since it was made."""
        existing = self._sqlite_tables()
        for window in windows:
            if window.table.name not in existing:
                for statement in window.table.create_statements():
                    self.db.execute(statement)
                existing.add(window.table.name)

    def _sqlite_tables(self) -> set[str]:
        return {name for (name,) in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _request_plan(self, db: str, select: d.Select, schema: TableSchema,
                      output: list[Column]) -> RequestPlan:
        table = _sqlite_table(db, schema.name)
        existing = self._sqlite_tables()  # a deployment made before totals existed has none
        totals = {name: window for name, window in
                  self._windows_totals(select, schema, table).items()
                  if window.table.name in existing}
        physical = {}
        for spec in select.windows.values():
            if spec.name in totals:
                continue
            name = self._physical_for(table, spec.partition_by, spec.order_by,
                                      _needs_order(spec, schema),
                                      _aggregated_columns(select, spec))
            if name is None:
                raise CatalogError(f"no SQLite index for window {spec.name}; redeploy")
            physical[spec.name] = name
        return RequestPlan(select, schema, table, output, physical, _CATALOG_VERSION_SQL, totals)

    def _drop_table(self, db: str, name: str, if_exists: bool) -> Result:
        if self._catalog_get("table", db, name) is None:
            if if_exists:
                return _empty()
            raise CatalogError(f"table {db}.{name} does not exist")
        users = [dep for dep in self._names("deployment", db)
                 if name in (self._catalog_get("deployment", db, dep) or {}).get("tables", [])]
        if users:
            raise CatalogError(f"table {db}.{name} is used by deployment(s) {', '.join(users)}")

        def drop() -> None:
            # its triggers go with it, the totals tables they kept do not
            for (totals,) in self.db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                    (_sqlite_table(db, name),)).fetchall():
                self.db.execute(f"DROP TABLE IF EXISTS {quote(totals)}")
            if self._clustered_key(_sqlite_table(db, name)):
                self.db.execute("DELETE FROM _row_seq WHERE tbl = ?", (_sqlite_table(db, name),))
            self.db.execute(f"DROP TABLE IF EXISTS {quote(_sqlite_table(db, name))}")
            self.db.execute("DELETE FROM _offline_parts WHERE db=? AND name=?", (db, name))
            self._catalog_delete("table", db, name)

        self._autocommit(drop)
        shutil.rmtree(self._offline_dir(db, name), ignore_errors=True)
        return _empty()

    def _set(self, session: Session, name: str, value: Any) -> Result:
        if name == "execute_mode":
            mode = str(value).lower()
            if mode not in {"offline", "online", "request"}:
                raise UnsupportedStatementError(f"execute_mode={value!r}")
            session.execute_mode = mode
        elif name in {"sync_job", "job_timeout", "enable_trace", "spark_config"}:
            session.variables[name] = value  # jobs here always run synchronously
        else:
            raise UnsupportedStatementError(f"SET @@{name}")
        return _empty()

    def _show(self, what: str, session: Session) -> Result:
        if what == "databases":
            names = self._names("database", "")
            return Result([Column("Databases", "string")], [(n,) for n in names])
        db = self._require_db(session, None)
        if what == "tables":
            return Result([Column("Tables", "string")],
                          [(n,) for n in self._names("table", db)])
        return Result([Column("DB", "string"), Column("Deployment", "string")],
                      [(db, n) for n in self._names("deployment", db)])

    def _autocommit(self, action: Any) -> None:
        """Run a catalog change in its own transaction unless one is already open."""
        if self._in_transaction:
            action()
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            action()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- INSERT -----------------------------------------------------------------------------

    def insert_many(self, sql: str, rows: Iterable[Sequence[Any]], session: Session,
                    statement: d.Insert | None = None) -> Result:
        """INSERT with `?` placeholders bound from each row (DB-API executemany). Joins the
        open transaction (or opens one): the caller commits."""
        stmt = statement or d.parse(sql)
        if not isinstance(stmt, d.Insert):
            raise UnsupportedStatementError("executemany takes an INSERT statement")
        if session.execute_mode == "offline":
            raise UnsupportedStatementError(
                "INSERT in offline mode (OpenMLDB inserts into the online table; "
                "SET @@execute_mode='online' first)")
        db = self._require_db(session, stmt.db)
        schema = self.table(db, stmt.table)
        target = list(stmt.columns) if stmt.columns else schema.column_names
        for name in target:
            schema.column(name)
        missing = [c.name for c in schema.columns if c.not_null and c.name not in target]
        if missing:
            raise DataError(f"INSERT leaves NOT NULL column(s) {', '.join(missing)} empty")
        bound = _bind_rows(stmt, rows, len(target))
        if not bound:
            return _empty(0)
        columns = _validate_columns(schema, target, bound)
        table = _sqlite_table(db, stmt.table)
        self.begin()
        key = self._clustered_key(table)
        if key:
            # Number the rows in arrival order, then insert them grouped by the first key
            # column (a stable sort on one int is several times cheaper than on the whole
            # key, and already puts each key's rows on neighbouring pages).
            first = self.db.execute("SELECT next FROM _row_seq WHERE tbl = ?",
                                    (table,)).fetchone()[0]
            table_rows = list(zip(*columns, range(first, first + len(bound)), strict=True))
            target_seq = [*target, "_seq"]
            table_rows.sort(key=itemgetter(target_seq.index(key[0])))
            self.db.execute("UPDATE _row_seq SET next = ? WHERE tbl = ?",
                            (first + len(bound), table))
            target = target_seq
        else:
            table_rows = list(zip(*columns, strict=True))
        placeholders = ", ".join("?" for _ in target)
        names = ", ".join(quote(n) for n in target)
        self.db.executemany(f"INSERT INTO {quote(table)} ({names}) VALUES ({placeholders})",
                            table_rows)
        return _empty(len(table_rows))

    # --- LOAD DATA --------------------------------------------------------------------------

    def _load_data(self, stmt: d.LoadData, session: Session) -> Result:
        db = self._require_db(session, stmt.db)
        schema = self.table(db, stmt.table)
        options = {k.lower(): v for k, v in stmt.options.items()}
        mode = str(options.get("mode", "append")).lower()
        if mode not in {"append", "overwrite", "error_if_exists"}:
            raise UnsupportedStatementError(f"LOAD DATA mode={mode!r}")
        files = sorted(globbing.glob(stmt.path)) if any(c in stmt.path for c in "*?[") \
            else [stmt.path]
        if stmt.path.startswith("file://"):
            files = [stmt.path.removeprefix("file://")]
        missing = [f for f in files if not Path(f).exists()]
        if not files or missing:
            raise DataError(f"LOAD DATA: no such file: {missing[0] if missing else stmt.path}")
        relation = self._read_files(files, options, schema)
        if session.execute_mode == "offline":
            return self._load_offline(db, schema, relation, mode)
        return self._load_online(db, schema, relation, mode, session)

    def _read_files(self, files: list[str], options: Mapping[str, Any],
                    schema: TableSchema) -> str:
        """A DuckDB SELECT over the files with the table's columns in OpenMLDB's encoding."""
        fmt = str(options.get("format", "csv")).lower()
        file_list = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        if fmt == "csv":
            header = str(options.get("header", True)).lower() in {"true", "1"}
            delimiter = str(options.get("delimiter", ","))
            null_value = str(options.get("null_value", "null"))
            source = (f"read_csv({file_list}, header={str(header).lower()}, all_varchar=true, "
                      f"delim='{delimiter}', nullstr=['{null_value}', ''], "
                      f"union_by_name=true)")
            if not header:
                raise UnsupportedStatementError("LOAD DATA CSV without a header")
        elif fmt == "parquet":
            source = f"read_parquet({file_list}, union_by_name=true)"
        else:
            raise UnsupportedStatementError(f"LOAD DATA format={fmt!r}")
        duck = self.duck()
        try:
            described = duck.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        except duckdb.Error as exc:
            raise DataError(f"LOAD DATA cannot read {files[0]}: {exc}") from None
        file_types = {row[0]: row[1] for row in described}
        missing = [c.name for c in schema.columns if c.name not in file_types]
        if missing:
            raise DataError(f"LOAD DATA: {files[0]} has no column(s) {', '.join(missing)}")
        projections = [f"{_convert_column(c, file_types[c.name])} AS {quote(c.name)}"
                       for c in schema.columns]
        return f"SELECT {', '.join(projections)} FROM {source}"

    def _offline_dir(self, db: str, table: str) -> Path:
        return self.root / "offline" / db / table

    def _load_offline(self, db: str, schema: TableSchema, relation: str, mode: str) -> Result:
        folder = self._offline_dir(db, schema.name)
        existing = sorted(folder.glob("part-*.parquet"))
        if existing and mode == "error_if_exists":
            raise CatalogError(f"offline table {db}.{schema.name} already has data")
        if mode == "overwrite":
            shutil.rmtree(folder, ignore_errors=True)
            existing = []
        folder.mkdir(parents=True, exist_ok=True)
        start = self._offline_rows(db, schema.name) if existing else 0
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        final = folder / f"part-{number:06d}.parquet"
        temp = folder / f".{final.name}.tmp"
        # Storage order is file order: DuckDB keeps scan order in its result stream, but a
        # window such as row_number() OVER () may number rows in parallel chunks; so the
        # sequence is attached here, batch by batch, as the rows stream out in order.
        rows = 0
        try:
            reader = self.duck().sql(relation).to_arrow_reader(100_000)
            with pq.ParquetWriter(temp, reader.schema.append(pa.field(SEQ, pa.int64()))) \
                    as writer:
                for batch in reader:
                    seq = pa.array(range(start + rows, start + rows + batch.num_rows),
                                   type=pa.int64())
                    writer.write_batch(pa.RecordBatch.from_arrays(
                        [*batch.columns, seq], schema=writer.schema))
                    rows += batch.num_rows
        except duckdb.Error as exc:
            temp.unlink(missing_ok=True)
            raise DataError(f"LOAD DATA: {exc}") from None
        temp.rename(final)
        self._autocommit(lambda: self.db.execute(
            "INSERT OR REPLACE INTO _offline_parts VALUES (?, ?, ?)",
            (db, schema.name, start + rows)))
        return _empty(rows)

    def _offline_rows(self, db: str, table: str) -> int:
        row = self.db.execute("SELECT rows FROM _offline_parts WHERE db=? AND name=?",
                              (db, table)).fetchone()
        return int(row[0]) if row else 0

    def _load_online(self, db: str, schema: TableSchema, relation: str, mode: str,
                     session: Session) -> Result:
        if mode != "append":
            raise UnsupportedStatementError(
                f"LOAD DATA mode={mode!r} in online mode (OpenMLDB appends online)")
        names = schema.column_names
        insert = (f"INSERT INTO {schema.name} ({', '.join(names)}) "
                  f"VALUES ({', '.join('?' for _ in names)})")
        total = 0
        try:
            reader = self.duck().sql(relation).to_arrow_reader(100_000)
            for batch in reader:
                rows = list(zip(*(batch.column(i).to_pylist() for i in range(len(names))),
                                strict=True))
                total += self.insert_many(insert, rows, Session(db, "online")).rowcount
        except duckdb.Error as exc:
            self.rollback()
            raise DataError(f"LOAD DATA: {exc}") from None
        except BaseException:
            self.rollback()
            raise
        self.commit()
        return _empty(total)

    # --- SELECT -----------------------------------------------------------------------------

    def _select(self, stmt: d.Select, session: Session) -> Result:
        db = self._require_db(session, stmt.db)
        tables = self.tables(db)
        if stmt.table not in tables:
            raise CatalogError(f"table {db}.{stmt.table} does not exist")
        compiler.validate_batch(stmt.text, db, tables)
        schema = tables[stmt.table]
        output = _batch_output(stmt, db, tables, schema)
        if session.execute_mode == "online":
            return self._select_online(stmt, db, schema, output)
        folder = self._offline_dir(db, stmt.table)
        parts = sorted(folder.glob("part-*.parquet"))
        if self.spark_master is not None:
            engine = spark_offline.engine_for(self.spark_master)
            rows, count = spark_offline.run_select(engine, stmt, db, schema, parts, output)
            return Result(output, rows, count)
        if parts:
            source = f"read_parquet('{folder}/part-*.parquet')"
        else:  # an empty offline table still has its columns
            cols = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[c.type]}) AS {quote(c.name)}"
                             for c in schema.columns)
            source = f"(SELECT {cols}, CAST(NULL AS BIGINT) AS {SEQ} WHERE false)"
        # Files need no row order (readers sort by what they need); results keep storage order.
        query = build_query(stmt, source, output, list(schema.columns),
                            self._order_keys(stmt, source), ordered=stmt.outfile is None)
        if stmt.outfile:
            return self._write_outfile(stmt, query)
        try:
            rows = self.duck().execute(query).fetchall()
        except duckdb.Error as exc:
            raise FeatureStoreError(f"offline query failed: {exc}") from None
        return Result(output, rows, len(rows))

    def _order_keys(self, stmt: d.Select, source: str) -> dict[str, OrderKey]:
        keys: dict[str, OrderKey] = {}
        for column in {spec.order_by for spec in stmt.windows.values()}:
            row = self.duck().execute(
                f"SELECT min({quote(column)}), max({quote(column)}), max({SEQ}) "
                f"FROM {source}").fetchone()
            if row is None or None in row:
                continue
            low, high, max_seq = (int(v) for v in row)
            if (high - low + 1) * (max_seq + 1) < 2**62:  # else the slower exact plan
                keys[column] = OrderKey(low, max_seq + 1)
        return keys

    def _select_online(self, stmt: d.Select, db: str, schema: TableSchema,
                       output: list[Column]) -> Result:
        """Online preview: plain column projections, as OpenMLDB's online mode allows."""
        names: list[str] = []
        for item in stmt.items:
            if item.expr is None:
                names.extend(schema.column_names)
            elif isinstance(item.expr, d.ColumnRef):
                names.append(item.expr.name)
            else:
                raise UnsupportedStatementError(
                    "online mode runs plain column SELECTs (use a deployment for features)")
        if stmt.where is not None or stmt.windows:
            raise UnsupportedStatementError("WHERE/WINDOW in an online-mode SELECT")
        limit = f" LIMIT {stmt.limit}" if stmt.limit is not None else ""
        rows = self.db.execute(
            f"SELECT {', '.join(quote(n) for n in names)} FROM "
            f"{quote(_sqlite_table(db, stmt.table))} ORDER BY _seq{limit}").fetchall()
        return Result(output, rows, len(rows))

    def _write_outfile(self, stmt: d.Select, query: str) -> Result:
        outfile = outfile_of(stmt)
        folder = Path(outfile.target)
        existing = sorted(folder.glob("part-*")) if folder.exists() else []
        if existing and outfile.mode == "error_if_exists":
            raise CatalogError(f"INTO OUTFILE: {folder} already has data (mode=error_if_exists)")
        if outfile.mode == "overwrite":
            shutil.rmtree(folder, ignore_errors=True)
            existing = []
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{len(existing):05d}.{outfile.file_format}"
        temp = folder / f".{final.name}.tmp"
        copy_options = "FORMAT parquet" if outfile.file_format == "parquet" else \
            f"FORMAT csv, HEADER {str(outfile.header).lower()}, DELIMITER ','"
        try:
            self.duck().execute(f"COPY ({query}) TO '{temp}' ({copy_options})")
        except duckdb.Error as exc:
            temp.unlink(missing_ok=True)
            raise FeatureStoreError(f"offline query failed: {exc}") from None
        temp.rename(final)
        return _empty()

    def duck(self) -> duckdb.DuckDBPyConnection:
        if self._duck is None:
            self._duck = duckdb.connect()
            self._duck.execute("SET enable_progress_bar = false")
        return self._duck

    # --- DEPLOY and request mode ------------------------------------------------------------

    def _deploy(self, stmt: d.Deploy, session: Session) -> Result:
        db = self._require_db(session, stmt.select.db)
        tables = self.tables(db)
        if stmt.select.table not in tables:
            raise CatalogError(f"table {db}.{stmt.select.table} does not exist")
        if self._catalog_get("deployment", db, stmt.name) is not None:
            if stmt.if_not_exists:
                return _empty()
            raise CatalogError(f"deployment {db}.{stmt.name} already exists")
        compiler.validate_request(stmt.select.text, db, tables)
        output = compiler.output_schema(stmt.select.text, db, tables)
        needed = compiler.required_indexes(stmt.select.text, tables)

        def deploy() -> None:
            # checked again inside the write transaction: processes starting together race
            if self._catalog_get("deployment", db, stmt.name) is not None:
                if stmt.if_not_exists:
                    return
                raise CatalogError(f"deployment {db}.{stmt.name} already exists")
            tables = self.tables(db)
            for table_name, indexes in needed.items():
                self._ensure_indexes(db, tables[table_name], indexes)
            schema = self.table(db, stmt.select.table)
            table = _sqlite_table(db, schema.name)
            totals = self._windows_totals(stmt.select, schema, table)
            self._ensure_physical_indexes(table, stmt.select, schema, set(totals))
            self._ensure_totals(totals.values())
            # Compiling the plan now rejects constructs request mode cannot run here.
            self._request_plan(db, stmt.select, schema, output)
            self._catalog_put("deployment", db, stmt.name, {
                "sql": stmt.select.text, "options": stmt.options,
                "tables": [stmt.select.table],
                "output": [[c.name, c.type] for c in output],
            })

        self._autocommit(deploy)
        return _empty()

    def _ensure_indexes(self, db: str, schema: TableSchema, needed: list[Index]) -> None:
        indexes = list(schema.indexes)
        for want in needed:
            same = [i for i in indexes if set(i.keys) == set(want.keys) and i.ts == want.ts]
            if any(i.covers(want) for i in same):
                continue
            if same:  # widen the TTL of the existing index, as OpenMLDB does on DEPLOY
                old = same[0]
                widened = Index(old.keys, old.ts,
                                0 if 0 in (old.ttl_minutes, want.ttl_minutes)
                                else max(old.ttl_minutes, want.ttl_minutes),
                                0 if 0 in (old.ttl_latest, want.ttl_latest)
                                else max(old.ttl_latest, want.ttl_latest),
                                old.ttl_type if old.ttl_type == want.ttl_type else "absandlat")
                indexes[indexes.index(old)] = widened
            else:
                indexes.append(want)  # its SQLite index: _ensure_physical_indexes
        updated = TableSchema(schema.name, schema.columns, tuple(indexes))
        self._catalog_put("table", db, schema.name, updated.to_json())

    def _drop_deployment(self, db: str, name: str) -> Result:
        if self._catalog_get("deployment", db, name) is None:
            raise CatalogError(f"deployment {db}.{name} does not exist")
        self._autocommit(lambda: self._catalog_delete("deployment", db, name))
        return _empty()

    def _plan(self, db: str, name: str) -> tuple[RequestPlan, _RequestRows, int]:
        """The deployment's request plan, the reader of its request rows and the catalog
        version they were made at (a cached plan costs no query: `request` checks the version
        in its own statement)."""
        with self._lock:
            cached = self._plans.get((db, name))
            if cached is not None:
                return *cached, self._plans_version
            # the version first: a catalog changed after it only makes the plan look stale
            version = self._catalog_version()
            if version != self._plans_version:
                self._plans.clear()
                self._plans_version = version
            body = self._catalog_get("deployment", db, name)
            if body is None:
                raise CatalogError(f"deployment {db}.{name} does not exist")
            select = d.parse(body["sql"])
            assert isinstance(select, d.Select)
            schema = self.table(db, select.table)
            output = [Column(n, t) for n, t in body["output"]]
            plan = self._request_plan(db, select, schema, output)
            rows = _RequestRows(schema)
            self._plans[(db, name)] = plan, rows
            return plan, rows, version

    def _catalog_version(self) -> int:
        row = self.db.execute(_CATALOG_VERSION_SQL).fetchone()
        return int(row[0])

    def _forget_plans(self) -> None:
        with self._lock:
            self._plans.clear()
            self._plans_version = -1

    def request(self, db: str, deployment: str, row: Mapping[str, Any] | Sequence[Any],
                now_ms: int | None = None) -> Result:
        """Request mode: the deployment's features for one row, which is not stored. The
        windows are read in one statement, so from one snapshot of the stored rows, with the
        catalog version: when another process changed the catalog since the plan was made,
        the plan is made again and run again."""
        for _ in range(_REQUEST_ATTEMPTS):
            plan, rows, version = self._plan(db, deployment)
            request = rows(row)
            try:
                seen, features = plan.execute(self.db, request, now_ms)
            except sqlite3.OperationalError:
                if self._catalog_version() == version:
                    raise
                seen = None  # e.g. an index the plan reads was dropped with its deployment
            if seen == version:
                return Result(plan.output, [features], 1)
            self._forget_plans()
        raise StoreUnavailableError(f"deployment {db}.{deployment}: the catalog changed "
                                    f"during each of {_REQUEST_ATTEMPTS} attempts")

    # --- maintenance and the ingest consumer's offsets --------------------------------------

    def expire(self, db: str, table: str, now_ms: int | None = None) -> int:
        """Delete online rows that every index's absolute TTL has expired (OpenMLDB's GC)."""
        schema = self.table(db, table)
        if any(i.ttl_minutes == 0 or i.ttl_type not in {"absolute", "absorlat"}
               for i in schema.indexes):
            return 0  # some index keeps every row (or keeps rows by count only)
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        conditions = " AND ".join(f"{quote(i.ts)} < {now_ms - i.ttl_minutes * 60_000}"
                                  for i in schema.indexes)
        cursor = self.db.execute(
            f"DELETE FROM {quote(_sqlite_table(db, table))} WHERE {conditions}")
        return cursor.rowcount

    def stored_offsets(self, consumer_group: str, topic: str) -> dict[int, int]:
        return dict(self.db.execute(
            "SELECT partition, next_offset FROM _consumer_offsets "
            "WHERE consumer_group=? AND topic=?", (consumer_group, topic)).fetchall())

    def store_offsets(self, consumer_group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Record the next offsets in the open transaction, atomically with its rows."""
        self.begin()
        self.db.executemany("INSERT OR REPLACE INTO _consumer_offsets VALUES (?, ?, ?, ?)",
                            [(consumer_group, topic, p, o) for p, o in offsets.items()])


def _batch_output(stmt: d.Select, db: str, tables: Mapping[str, TableSchema],
                  schema: TableSchema) -> list[Column]:
    """The result columns of an offline query, typed by OpenMLDB's compiler.

    GenOutputSchema compiles in request mode, where a whole-table aggregate such as
    `SELECT count(*) FROM t` does not exist; for those (already validated in batch mode) the
    types follow OpenMLDB's aggregate rules instead.
    """
    try:
        return compiler.output_schema(stmt.text, db, tables)
    except SQLValidationError:
        if not all(isinstance(i.expr, d.Call) and i.expr.window is None for i in stmt.items):
            raise
    columns = []
    for position, item in enumerate(stmt.items):
        call = item.expr
        assert isinstance(call, d.Call)
        name = item.alias or f"{call.name}({'*' if call.star else '...'})_{position}"
        arg_type = None
        if call.args and isinstance(call.args[0], d.ColumnRef):
            arg_type = schema.column(call.args[0].name).type
        if call.name in {"count", "distinct_count"}:
            kind = "int64"
        elif call.name == "avg":
            kind = "double"
        elif call.name in {"min", "max"} and arg_type is not None:
            kind = arg_type
        elif call.name == "sum" and arg_type is not None:
            kind = "double" if arg_type in {"float", "double"} else "int64"
        else:
            raise UnsupportedStatementError(f"the result type of {call.name}() here")
        columns.append(Column(name, kind))
    return columns


def _aggregated_columns(select: d.Select, spec: d.WindowSpec) -> list[str]:
    """The columns aggregated over a window, besides its keys and ts."""
    exprs = [item.expr for item in select.items if item.expr is not None]
    columns = {arg.name for call in d.calls_over(spec.name, exprs) for arg in call.args
               if isinstance(arg, d.ColumnRef)}
    return sorted(columns - {*spec.partition_by, spec.order_by})


def _needs_order(spec: d.WindowSpec, schema: TableSchema) -> bool:
    """True when a window reads a time range or the newest rows, not all rows of its keys."""
    limited = spec.preceding is not None or spec.maxsize is not None or \
        spec.exclude_current_time
    index = next((i for i in schema.indexes if set(i.keys) == set(spec.partition_by)
                  and i.ts == spec.order_by), None)
    return limited or (index is not None and index.ttl_latest > 0)


def _sqlite_table(db: str, table: str) -> str:
    return f"{db}.{table}"


def _first_timestamp(columns: Sequence[Column]) -> str:
    for col in columns:
        if col.type in {"timestamp", "int64"}:
            return col.name
    raise CatalogError("a table without an INDEX needs a timestamp or bigint column")


def _convert_column(column: Column, file_type: str) -> str:
    """DuckDB SQL turning a file column into OpenMLDB's encoding of `column`."""
    name = quote(column.name)
    if column.type == "timestamp":
        if file_type == "TIMESTAMP WITH TIME ZONE":
            return f"epoch_ms({name})"
        if file_type.startswith("TIMESTAMP") or file_type == "DATE":
            # wall-clock values: OpenMLDB reads them in UTC+8
            return f"epoch_ms(CAST({name} AS TIMESTAMP)) - {UTC8_OFFSET_MS}"
        if file_type in {"BIGINT", "INTEGER", "HUGEINT"}:
            return f"CAST({name} AS BIGINT)"
        return (f"CASE WHEN regexp_full_match(trim({name}), '-?[0-9]+') "
                f"THEN CAST({name} AS BIGINT) "
                f"ELSE epoch_ms(CAST({name} AS TIMESTAMP)) - {UTC8_OFFSET_MS} END")
    return f"CAST({name} AS {DUCKDB_TYPES[column.type]})"


def _bind_rows(stmt: d.Insert, rows: Iterable[Sequence[Any]],
               width: int) -> list[Sequence[Any]]:
    """Each VALUES tuple with its `?` placeholders bound from one parameter row."""
    templates = stmt.rows
    for template in templates:
        if len(template) != width:
            raise DataError(f"INSERT has {len(template)} values for {width} columns")
        for value in template:
            if not isinstance(value, d.Literal | d.Placeholder):
                raise UnsupportedStatementError("expressions in INSERT VALUES")
    if len(templates) == 1 and all(isinstance(v, d.Placeholder) for v in templates[0]):
        # the common executemany case: the parameter rows are the rows, checked at C speed
        params_rows = rows if isinstance(rows, list) else list(rows)
        bad = set(map(len, params_rows)) - {width}
        if bad:
            raise DataError(f"row has {min(bad)} values, INSERT expects {width}")
        return params_rows
    bound: list[Sequence[Any]] = []
    for params in rows:
        params = list(params)
        for template in templates:
            values = [params[v.index] if isinstance(v, d.Placeholder) else v.value  # type: ignore[union-attr]
                      for v in template]
            bound.append(values)
    return bound


class _RequestRows:
    """Reads a table's request rows: their values in table order and the table's types,
    DataError if a row does not fit. Integer columns holding ints in range are taken as they
    are; any other row goes through the checks of inserts."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.names = schema.column_names
        self._known = frozenset(self.names)
        # (1, 0) holds no int: rows with values in other columns always take the full checks
        self._ranges = [INTEGER_RANGES.get(column.type, (1, 0)) for column in schema.columns]
        self._nullable = [not column.not_null for column in schema.columns]

    def __call__(self, row: Mapping[str, Any] | Sequence[Any]) -> tuple[Any, ...]:
        names = self.names
        if type(row) is dict or isinstance(row, Mapping):  # the ABC check is the slower
            if not self._known.issuperset(row):
                unknown = row.keys() - self._known
                raise DataError(f"request row has unknown column(s) {sorted(unknown)}")
            values = list(map(row.get, names))
        else:
            values = list(row)
            if len(values) != len(names):
                raise DataError(f"request row has {len(values)} values, table "
                                f"{self.schema.name} has {len(names)} columns")
        for value, (low, high), nullable in zip(values, self._ranges, self._nullable,
                                                strict=True):
            if not ((type(value) is int and low <= value <= high)
                    or (value is None and nullable)):
                return tuple(column[0] for column in
                             _validate_columns(self.schema, names, [values]))
        return tuple(values)


def _validate_columns(schema: TableSchema, names: list[str],
                      rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """The rows' columns converted to the table's types; DataError names the bad value.

    Works a column at a time so a batch of 100k rows is checked at C speed in the common case.
    """
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [
        () for _ in names]
    for position, name in enumerate(names):
        values = columns[position]
        column = schema.column(name)
        kinds = set(map(type, values))
        has_null = type(None) in kinds
        if column.not_null and has_null:
            raise DataError(f"column {name} is NOT NULL but a row has null")
        kinds.discard(type(None))
        if column.type in INTEGER_RANGES:
            if kinds - {int}:
                values = columns[position] = [_to_integer(v, column) for v in values]
            present = [v for v in values if v is not None] if has_null else values
            low, high = INTEGER_RANGES[column.type]
            if present and (min(present) < low or max(present) > high):
                raise DataError(f"column {name} ({column.type}) value out of range")
        elif column.type in {"float", "double"}:
            if kinds - {int, float}:
                raise DataError(f"column {name} ({column.type}) needs numbers, got "
                                f"{sorted(k.__name__ for k in kinds - {int, float})}")
        elif column.type == "bool":
            if kinds - {bool}:
                raise DataError(f"column {name} (bool) needs true/false")
        elif kinds - {str}:
            raise DataError(f"column {name} ({column.type}) needs strings")
    return columns


def _to_integer(value: Any, column: Column) -> int | None:
    if value is None:
        return None
    if column.type == "timestamp":
        if isinstance(value, datetime):  # naive = wall clock in UTC+8, as OpenMLDB reads it
            if value.tzinfo is not None:
                return int(value.timestamp() * 1000)
            return int((value - datetime(1970, 1, 1)).total_seconds() * 1000) - UTC8_OFFSET_MS
        if isinstance(value, str):
            try:
                return _to_integer(datetime.fromisoformat(value), column)
            except ValueError:
                raise DataError(f"column {column.name}: bad timestamp {value!r}") from None
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise DataError(f"column {column.name} ({column.type}) needs an integer, "
                        f"got {value!r}")
    return int(value.__index__())
