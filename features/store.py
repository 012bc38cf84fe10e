"""Store set-up shared by every command: the TalkingData table and the `demo` deployment."""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from core.events import TABLE_COLUMNS, rows_from_frame
from features.connection import connect

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def read_sql(name: str) -> str:
    """A file of features/sql without its comment lines."""
    text = resources.files("features").joinpath("sql", name).read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def table_ddl(table: str = "talkingdata") -> str:
    return read_sql("talkingdata_table.sql").replace("talkingdata", table, 1).strip().rstrip(";")


def feature_sql(table: str = "talkingdata") -> str:
    """The deployment's SELECT, the same text offline (training) and online (serving)."""
    return read_sql("talkingdata_deployment.sql").replace("FROM talkingdata", f"FROM {table}")


def init_store(store_url: str, database: str, table: str, deployment: str) -> list[str]:
    """Create the database, table and deployment unless they exist; returns what it created."""
    conn = connect(store_url, database)
    created: list[str] = []
    try:
        cursor = conn.cursor()
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        cursor.execute(f"USE {database}")
        if table not in _names(cursor, "SHOW TABLES"):
            cursor.execute(table_ddl(table))
            created.append(f"table {database}.{table}")
        if deployment not in _names(cursor, "SHOW DEPLOYMENTS", column=1):
            cursor.execute(f"DEPLOY IF NOT EXISTS {deployment} {feature_sql(table)}")
            created.append(f"deployment {database}.{deployment}")
    finally:
        conn.close()
    for item in created:
        log.info("created %s", item)
    return created


def insert_clicks(store_url: str, database: str, table: str, clicks: pd.DataFrame,
                  batch_rows: int = 100_000) -> None:
    """Insert Kaggle-format clicks into the online table, committing every `batch_rows`."""
    rows = rows_from_frame(clicks).tolist()
    conn = connect(store_url, database)
    try:
        cursor = conn.cursor()
        cursor.execute("SET @@execute_mode='online'")
        insert = f"INSERT INTO {table} VALUES ({', '.join('?' for _ in TABLE_COLUMNS)})"
        for start in range(0, len(rows), batch_rows):
            cursor.executemany(insert, rows[start:start + batch_rows])
            conn.commit()
    finally:
        conn.close()


def _names(cursor: Any, sql: str, column: int = 0) -> set[str]:
    cursor.execute(sql)
    return {row[column] for row in cursor.fetchall()}
