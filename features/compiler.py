"""OpenMLDB's own SQL compiler (the `openmldb` package's native module), used without a server.

Every SELECT and DEPLOY is validated here before either engine runs it, so both engines accept
exactly the SQL a real OpenMLDB cluster accepts, and result column types come from OpenMLDB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache, lru_cache
from types import ModuleType

from features.exceptions import SQLValidationError
from features.schema import Column, Index, TableSchema

_NATIVE_TYPES = {
    "bool": "kTypeBool", "int16": "kTypeInt16", "int32": "kTypeInt32", "int64": "kTypeInt64",
    "float": "kTypeFloat", "double": "kTypeDouble", "string": "kTypeString",
    "timestamp": "kTypeTimestamp", "date": "kTypeDate",
}


@cache
def _native() -> ModuleType:
    # glog reads its level when the native module loads; its messages repeat what the calls
    # return (and GenOutputSchema logs an ERROR line for every batch-only query).
    os.environ.setdefault("GLOG_minloglevel", "3")
    import openmldb.native.sql_router_sdk as sdk

    return sdk


def _table_vector(tables: Mapping[str, TableSchema]) -> object:
    sdk = _native()
    table_vector = sdk.TableColumnDescPairVector()
    for table in tables.values():
        columns = sdk.ColumnDescVector()
        for col in table.columns:
            # The SWIG vector takes the raw pointer (`.this`), not the proxy object.
            columns.append(sdk.ColumnDescPair(col.name, getattr(sdk, _NATIVE_TYPES[col.type])).this)
        table_vector.append(sdk.TableColumnDescPair(table.name, columns).this)
    return table_vector


def _db_vector(db: str, tables: Mapping[str, TableSchema]) -> object:
    sdk = _native()
    db_vector = sdk.DBTableColumnDescPairVector()
    db_vector.append(sdk.DBTableColumnDescPair(db, _table_vector(tables)).this)
    return db_vector


def _raise_on_errors(messages: tuple[str, ...], mode: str) -> None:
    if messages:
        # The first line is the compiler's message; the rest is a C++ source trace.
        raise SQLValidationError(f"OpenMLDB rejects the SQL in {mode} mode: {messages[0]}")


# Compiling takes tens of milliseconds, and the same query meets the same schemas again and
# again (every training run, every process that loads a deployment): results are cached by
# (sql, db, schemas); schemas are frozen dataclasses, so a changed table is a new key.
_Tables = tuple[TableSchema, ...]


def _key(tables: Mapping[str, TableSchema]) -> _Tables:
    return tuple(tables[name] for name in sorted(tables))


def validate_request(sql: str, db: str, tables: Mapping[str, TableSchema]) -> None:
    """Raise SQLValidationError unless OpenMLDB can deploy `sql` (request mode)."""
    _raise_on_errors(_validate("request", sql, db, _key(tables)), "request")


def validate_batch(sql: str, db: str, tables: Mapping[str, TableSchema]) -> None:
    """Raise SQLValidationError unless OpenMLDB can run `sql` offline (batch mode)."""
    _raise_on_errors(_validate("batch", sql, db, _key(tables)), "batch")


@lru_cache(maxsize=256)
def _validate(mode: str, sql: str, db: str, tables: _Tables) -> tuple[str, ...]:
    native = _native()
    check = native.ValidateSQLInRequest if mode == "request" else native.ValidateSQLInBatch
    # Keep the C++ vector in a variable: iterating a temporary crashes the interpreter.
    errors = check(sql, db, _db_vector(db, {t.name: t for t in tables}))
    return tuple(errors)


def output_schema(sql: str, db: str, tables: Mapping[str, TableSchema]) -> list[Column]:
    """The result columns (name, OpenMLDB type) of a query, as OpenMLDB computes them."""
    columns = _output_schema(sql, db, _key(tables))
    if columns is None:  # the native call gives no message; validation gives one
        validate_batch(sql, db, tables)
        raise SQLValidationError("OpenMLDB cannot compute the output schema of the query")
    return list(columns)


@lru_cache(maxsize=256)
def _output_schema(sql: str, db: str, tables: _Tables) -> tuple[Column, ...] | None:
    sdk = _native()
    schema = sdk.GenOutputSchema(sql, db, _db_vector(db, {t.name: t for t in tables}))
    if schema is None:
        return None
    codes = {getattr(sdk, native): name for name, native in _NATIVE_TYPES.items()}
    return tuple(Column(schema.GetColumnName(i), codes[schema.GetColumnType(i)])
                 for i in range(schema.GetColumnCnt()))


_INDEX_RE = re.compile(
    r"index\(key=\(?(?P<keys>[^)]*?)\)?, ttl=(?P<ttl>\([^)]*\)|[^,]+), ttl_type=(?P<ttl_type>\w+), "
    r"ts=`(?P<ts>\w+)`\)"
)


def required_indexes(sql: str, tables: Mapping[str, TableSchema]) -> dict[str, list[Index]]:
    """The indexes (per table) that deploying `sql` needs, as OpenMLDB's GenDDL suggests."""
    return {table: list(indexes) for table, indexes in _required_indexes(sql, _key(tables))}


@lru_cache(maxsize=64)
def _required_indexes(sql: str, tables: _Tables) -> tuple[tuple[str, tuple[Index, ...]], ...]:
    ddls = list(_native().GenDDL(sql, _table_vector({t.name: t for t in tables})))
    result: dict[str, list[Index]] = {}
    for ddl in ddls:
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl)
        if table is None:
            continue
        indexes = result.setdefault(table.group(1), [])
        for match in _INDEX_RE.finditer(ddl):
            indexes.append(_index_from_ddl(match))
    return tuple((table, tuple(indexes)) for table, indexes in result.items())


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
