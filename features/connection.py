"""`features.connect(url)`: one DB-API surface over a real OpenMLDB or the embedded engine.

- `openmldb:///<db>?zk=<host:port>&zkPath=<path>` (cluster) or `openmldb://<host>:<port>/<db>`
  (standalone) → `openmldb.dbapi`.
- `embedded:///<absolute dir>` or `embedded://<relative dir>` → the embedded engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from features.embedded import EmbeddedStore, Result, Session
from features.exceptions import (
    CatalogError,
    DataError,
    FeatureStoreError,
    StoreUnavailableError,
    StoreURLError,
)
from features.schema import Column


class Cursor(Protocol):
    """The cursor surface the pipeline uses; `openmldb.dbapi` cursors have it too."""

    description: Any

    def execute(self, operation: str, parameters: Sequence[Any] = ...) -> Any: ...
    def executemany(self, operation: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Any: ...
    def callproc(self, procname: str, parameters: Any = ...) -> Any: ...
    def fetchone(self) -> tuple[Any, ...] | None: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """The connection surface the pipeline uses; `openmldb.dbapi` connections have it too."""

    def cursor(self) -> Cursor: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class EmbeddedCursor:
    """A DB-API 2.0 cursor on the embedded engine."""

    arraysize = 1

    def __init__(self, connection: EmbeddedConnection) -> None:
        self.connection = connection
        self.description: list[tuple[Any, ...]] | None = None
        self._columns: list[Column] | None = None  # those `description` describes
        self.rowcount = -1
        self._rows: list[tuple[Any, ...]] = []
        self._position = 0

    def _set_result(self, result: Result) -> EmbeddedCursor:
        if result.columns is not self._columns:  # requests to one deployment share them
            self._columns = result.columns
            self.description = [(c.name, c.type, None, None, None, None, True)
                                for c in result.columns] or None
        self._rows = result.rows
        self._position = 0
        self.rowcount = result.rowcount
        return self

    def execute(self, operation: str, parameters: Sequence[Any] = ()) -> EmbeddedCursor:
        conn = self.connection
        return self._set_result(conn.store.execute(operation, conn.session, parameters))

    def executemany(self, operation: str,
                    seq_of_parameters: Iterable[Sequence[Any]]) -> EmbeddedCursor:
        conn = self.connection
        return self._set_result(
            conn.store.insert_many(operation, seq_of_parameters, conn.session))

    def callproc(self, procname: str,
                 parameters: Mapping[str, Any] | Sequence[Any] = ()) -> EmbeddedCursor:
        """Request mode: `parameters` is the request row (dict by column or tuple)."""
        conn = self.connection
        if conn.session.db is None:
            raise FeatureStoreError("no database selected for callproc: connect with a db")
        return self._set_result(conn.store.request(conn.session.db, procname, parameters))

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._position >= len(self._rows):
            return None
        row = self._rows[self._position]
        self._position += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        size = size or self.arraysize
        rows = self._rows[self._position:self._position + size]
        self._position += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._position:]
        self._position = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._rows = []


class EmbeddedConnection:
    """A DB-API 2.0 connection to an embedded store. INSERTs join a transaction that commit()
    ends; DDL, LOAD DATA and DEPLOY commit on their own (as on a real OpenMLDB)."""

    def __init__(self, root: Path, database: str | None = None,
                 spark_master: str | None = None) -> None:
        self.store = EmbeddedStore(root, spark_master)
        self.session = Session()
        if database and self.store.has_database(database):
            self.session.db = database
        self.database = database

    def cursor(self) -> EmbeddedCursor:
        return EmbeddedCursor(self)

    def commit(self) -> None:
        self.store.commit()

    def rollback(self) -> None:
        self.store.rollback()

    def close(self) -> None:
        self.store.close()

    def begin(self) -> None:
        """Open the transaction the next statements join (the store's offsets included)."""
        self.store.begin()

    def stored_offsets(self, consumer_group: str, topic: str) -> dict[int, int]:
        """The Kafka offsets stored with the rows (exactly-once ingest), by partition."""
        return self.store.stored_offsets(consumer_group, topic)

    def store_offsets(self, consumer_group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Store Kafka offsets in the open transaction, so they commit with the rows."""
        self.store.store_offsets(consumer_group, topic, offsets)

    def __enter__(self) -> EmbeddedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


OFFLINE_EXECUTORS = ("embedded", "spark")


def connect(url: str, database: str | None = None, *, offline_executor: str = "embedded",
            spark_master: str = "local[*]") -> Connection:
    """A DB-API connection for a store URL; `database` is used when the URL names none.

    With an embedded store, `offline_executor="spark"` runs offline SELECTs (and INTO OUTFILE)
    on OpenMLDB's own batch engine at `spark_master` over the store's offline files; a real
    OpenMLDB runs its offline jobs on its own Spark, so the executor does not apply there."""
    if offline_executor not in OFFLINE_EXECUTORS:
        raise StoreURLError(f"unknown offline executor {offline_executor!r}: use "
                            f"{' or '.join(OFFLINE_EXECUTORS)}")
    parsed = urlparse(url)
    if parsed.scheme == "embedded":
        path = url[len("embedded://"):]
        if not path:
            raise StoreURLError(f"embedded store URL without a directory: {url!r}")
        path, _, query = path.partition("?")
        db = parse_qs(query).get("db", [database])[0]
        return EmbeddedConnection(Path(path), db,
                                  spark_master if offline_executor == "spark" else None)
    if parsed.scheme == "openmldb":
        return _connect_openmldb(url, database)
    raise StoreURLError(
        f"unknown feature-store URL {url!r}: use embedded://<dir> or openmldb:///<db>?zk=...")


def connect_embedded(url: str, database: str | None = None) -> EmbeddedConnection:
    """An embedded store's connection, with what only it has (offsets in its transactions)."""
    if not is_embedded(url):
        raise StoreURLError(f"not an embedded store URL: {url!r}")
    connection = connect(url, database)
    assert isinstance(connection, EmbeddedConnection)
    return connection


def _connect_openmldb(url: str, database: str | None) -> Connection:
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    db = parsed.path.lstrip("/") or database
    if not db:
        raise StoreURLError(f"openmldb URL without a database: {url!r}")
    try:
        from openmldb import dbapi
    except ImportError as exc:  # pragma: no cover - openmldb is a dependency
        raise FeatureStoreError(f"the openmldb package cannot be imported: {exc}") from None
    params: dict[str, Any] = {"database": db}
    if "zk" in query:
        params.update(zk=query["zk"], zkPath=query.get("zkPath", "/openmldb"))
    elif parsed.hostname and parsed.port:
        params.update(host=parsed.hostname, port=parsed.port)
    else:
        raise StoreURLError(f"openmldb URL needs ?zk=host:port&zkPath=... or host:port: {url!r}")
    params.update({k: v for k, v in query.items() if k not in {"zk", "zkPath"}})
    try:
        connection: Connection = dbapi.connect(**params)
    except Exception as exc:  # the SDK raises bare Exceptions when ZooKeeper or a tablet is away
        raise StoreUnavailableError(f"OpenMLDB at {url} does not answer: {exc}") from exc
    return connection


def is_embedded(url: str) -> bool:
    return urlparse(url).scheme == "embedded"


def classify_store_error(exc: BaseException) -> FeatureStoreError | None:
    """What an engine's exception means for the caller, as a FeatureStoreError (transient:
    StoreUnavailableError; permanent: the others), or None when it is not a store error at
    all (a bug: let it surface)."""
    if isinstance(exc, FeatureStoreError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and any(
            word in str(exc) for word in ("locked", "busy", "disk I/O")):
        return StoreUnavailableError(f"embedded store busy: {exc}")
    if isinstance(exc, TimeoutError | ConnectionError):
        return StoreUnavailableError(f"store unreachable: {exc}")
    try:
        from openmldb import dbapi
    except ImportError:  # pragma: no cover - openmldb is a dependency
        return None
    if isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError | dbapi.InternalError):
        return StoreUnavailableError(f"OpenMLDB: {exc}")
    if isinstance(exc, dbapi.DataError | dbapi.IntegrityError):
        return DataError(f"OpenMLDB refused the data: {exc}")
    if isinstance(exc, dbapi.ProgrammingError | dbapi.NotSupportedError | dbapi.DatabaseError):
        return CatalogError(f"OpenMLDB: {exc}")
    return None
