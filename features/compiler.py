"""OpenMLDB's own SQL compiler (the `openmldb` package's native module), used without a server.

Every SELECT and DEPLOY is validated here before either engine runs it, so both engines accept
exactly the SQL a real OpenMLDB cluster accepts, and result column types come from OpenMLDB.

The native calls run in one child process, never in the caller's: the compiler JIT-compiles
SQL with LLVM and leaves stale unwind tables behind, after which any later stack walk in the
process (numpy calls backtrace() when it elides temporaries) crashes with SIGSEGV.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from features.exceptions import FeatureStoreError, SQLValidationError
from features.schema import Column, Index, TableSchema

_NATIVE_TYPES = {
    "bool": "kTypeBool", "int16": "kTypeInt16", "int32": "kTypeInt32", "int64": "kTypeInt64",
    "float": "kTypeFloat", "double": "kTypeDouble", "string": "kTypeString",
    "timestamp": "kTypeTimestamp", "date": "kTypeDate",
}
_Tables = tuple[TableSchema, ...]

# --- the child process ----------------------------------------------------------------------


def _native() -> Any:
    # glog reads its level when the native module loads; its messages repeat what the calls
    # return (and GenOutputSchema logs an ERROR line for every batch-only query).
    os.environ.setdefault("GLOG_minloglevel", "3")
    import openmldb.native.sql_router_sdk as sdk

    return sdk


def _table_vector(sdk: Any, tables: _Tables) -> Any:
    table_vector = sdk.TableColumnDescPairVector()
    for table in tables:
        columns = sdk.ColumnDescVector()
        for col in table.columns:
            # The SWIG vector takes the raw pointer (`.this`), not the proxy object.
            columns.append(sdk.ColumnDescPair(col.name, getattr(sdk, _NATIVE_TYPES[col.type])).this)
        table_vector.append(sdk.TableColumnDescPair(table.name, columns).this)
    return table_vector


def _db_vector(sdk: Any, db: str, tables: _Tables) -> Any:
    db_vector = sdk.DBTableColumnDescPairVector()
    db_vector.append(sdk.DBTableColumnDescPair(db, _table_vector(sdk, tables)).this)
    return db_vector


def _run_native(operation: str, sql: str, db: str, tables: _Tables) -> Any:
    """Runs in the compiler process; returns plain Python data."""
    sdk = _native()
    if operation in {"request", "batch"}:
        check = sdk.ValidateSQLInRequest if operation == "request" else sdk.ValidateSQLInBatch
        # Keep the C++ vector in a variable: iterating a temporary crashes the interpreter.
        errors = check(sql, db, _db_vector(sdk, db, tables))
        return tuple(errors)
    if operation == "output_schema":
        schema = sdk.GenOutputSchema(sql, db, _db_vector(sdk, db, tables))
        if schema is None:
            return None
        codes = {getattr(sdk, native): name for name, native in _NATIVE_TYPES.items()}
        return tuple(Column(schema.GetColumnName(i), codes[schema.GetColumnType(i)])
                     for i in range(schema.GetColumnCnt()))
    if operation == "ddl":
        ddls = sdk.GenDDL(sql, _table_vector(sdk, tables))
        return tuple(ddls)
    raise ValueError(operation)


# --- the caller's side ----------------------------------------------------------------------


class _CompilerProcess:
    """`python -m features.compiler_worker`, spoken to in JSON lines over its stdin/stdout.

    A plain subprocess, not multiprocessing: it never re-imports the caller's main module, so
    scripts without an `if __name__ == "__main__"` guard work too."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "features.compiler_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1,
            env={"GLOG_minloglevel": "3", **os.environ})
        self.pid = os.getpid()  # a forked child of the caller needs its own process

    def call(self, operation: str, sql: str, db: str, tables: _Tables) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"operation": operation, "sql": sql, "db": db,
                   "tables": [t.to_json() for t in tables]}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.kill()
            raise FeatureStoreError(
                f"the OpenMLDB compiler process crashed on: {sql.strip()[:200]}")
        reply = json.loads(line)
        if "error" in reply:
            raise FeatureStoreError(f"the OpenMLDB compiler failed: {reply['error']}")
        return reply["result"]


_process: _CompilerProcess | None = None
_process_lock = threading.Lock()


def _call(operation: str, sql: str, db: str, tables: _Tables) -> Any:
    global _process
    with _process_lock:
        if _process is None or _process.pid != os.getpid() or _process.proc.poll() is not None:
            _process = _CompilerProcess()
        return _process.call(operation, sql, db, tables)


def serve_requests(lines: Iterable[str], reply: Callable[[str], None]) -> None:
    """The compiler process's loop: one JSON request per line, one JSON reply per line."""
    for line in lines:
        request = json.loads(line)
        tables = tuple(TableSchema.from_json(t) for t in request["tables"])
        try:
            result = _run_native(request["operation"], request["sql"], request["db"], tables)
        except Exception as exc:  # reported to the caller, who raises it
            reply(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            continue
        if isinstance(result, tuple) and result and isinstance(result[0], Column):
            result = [[c.name, c.type] for c in result]
        reply(json.dumps({"result": result}))


def _key(tables: Mapping[str, TableSchema]) -> _Tables:
    return tuple(tables[name] for name in sorted(tables))


# The same query meets the same schemas again and again (every training run, every process
# that loads a deployment): results are cached by (sql, db, schemas); schemas are frozen
# dataclasses, so a changed table is a new key.
@lru_cache(maxsize=256)
def _cached(operation: str, sql: str, db: str, tables: _Tables) -> Any:
    result = _call(operation, sql, db, tables)
    return tuple(result) if isinstance(result, list) else result


def _raise_on_errors(messages: tuple[str, ...], mode: str) -> None:
    if messages:
        # The first line is the compiler's message; the rest is a C++ source trace.
        raise SQLValidationError(f"OpenMLDB rejects the SQL in {mode} mode: {messages[0]}")


def validate_request(sql: str, db: str, tables: Mapping[str, TableSchema]) -> None:
    """Raise SQLValidationError unless OpenMLDB can deploy `sql` (request mode)."""
    _raise_on_errors(_cached("request", sql, db, _key(tables)), "request")


def validate_batch(sql: str, db: str, tables: Mapping[str, TableSchema]) -> None:
    """Raise SQLValidationError unless OpenMLDB can run `sql` offline (batch mode)."""
    _raise_on_errors(_cached("batch", sql, db, _key(tables)), "batch")


def output_schema(sql: str, db: str, tables: Mapping[str, TableSchema]) -> list[Column]:
    """The result columns (name, OpenMLDB type) of a query, as OpenMLDB computes them."""
    columns = _cached("output_schema", sql, db, _key(tables))
    if columns is None:  # the native call gives no message; validation gives one
        validate_batch(sql, db, tables)
        raise SQLValidationError("OpenMLDB cannot compute the output schema of the query")
    return [Column(name, kind) for name, kind in columns]


_INDEX_RE = re.compile(
    r"index\(key=\(?(?P<keys>[^)]*?)\)?, ttl=(?P<ttl>\([^)]*\)|[^,]+), "
    r"ttl_type=(?P<ttl_type>\w+), ts=`(?P<ts>\w+)`\)"
)


def required_indexes(sql: str, tables: Mapping[str, TableSchema]) -> dict[str, list[Index]]:
    """The indexes (per table) that deploying `sql` needs, as OpenMLDB's GenDDL suggests."""
    result: dict[str, list[Index]] = {}
    for ddl in _cached("ddl", sql, "", _key(tables)):
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)
        if table is None:
            continue
        indexes = result.setdefault(table.group(1), [])
        for match in _INDEX_RE.finditer(ddl):
            indexes.append(_index_from_ddl(match))
    return result


def _index_from_ddl(match: re.Match[str]) -> Index:
    keys = tuple(k.strip().strip("`") for k in match.group("keys").split(","))
    ttl_type = match.group("ttl_type").lower()
    ttl = match.group("ttl").strip("() ")
    minutes, latest = 0, 0
    if ttl_type == "absolute":
        minutes = _minutes(ttl)
    elif ttl_type == "latest":
        latest = int(ttl)
    else:  # absandlat / absorlat: "(abs, lat)"
        abs_part, lat_part = (p.strip() for p in ttl.split(","))
        minutes, latest = _minutes(abs_part), int(lat_part)
    return Index(keys, match.group("ts"), minutes, latest, ttl_type)


def _minutes(ttl: str) -> int:
    units = {"m": 1, "h": 60, "d": 1440}
    if ttl[-1] in units:
        return int(ttl[:-1]) * units[ttl[-1]]
    return int(ttl)
