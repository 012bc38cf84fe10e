"""Store set-up shared by every command: the TalkingData table and the `demo` deployment."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from features.connection import connect

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


def _names(cursor: Any, sql: str, column: int = 0) -> set[str]:
    cursor.execute(sql)
    return {row[column] for row in cursor.fetchall()}
