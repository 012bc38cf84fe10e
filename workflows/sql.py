"""The workflow's OpenMLDB SQL, and running it on the configured store.

The same texts become DolphinScheduler OpenMLDB tasks and run on the embedded runner; they may
hold `${param}` placeholders (DolphinScheduler's syntax) that both runners fill in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from core.config import Settings
from core.registry import sql_hash
from features.connection import connect
from features.dialect import split_statements
from features.store import feature_sql, table_ddl
from workflows.exceptions import StepError

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def deployment_name(settings: Settings) -> str:
    """The deployment serving models trained on today's feature SQL.

    Named after the SQL's hash, so `DEPLOY IF NOT EXISTS` is rerun-safe and a changed SQL gets
    a new deployment beside the old one: the old model keeps its deployment until publishing
    switches the predict servers to the new model and deployment together.
    """
    return f"{settings.deployment}_{sql_hash(feature_sql(settings.table))[:8]}"


def create_table_sql(settings: Settings) -> str:
    return (f"CREATE DATABASE IF NOT EXISTS {settings.database};\n"
            f"USE {settings.database};\n"
            f"{table_ddl(settings.table)};")


def training_select(table: str) -> str:
    """The deployment SELECT plus click_time, which the time-based split needs (and drops).

    The training window is not a WHERE clause: OpenMLDB cannot type a windowed query with
    WHERE in request mode, which the embedded engine needs; the trainer filters by click_time.
    """
    select = feature_sql(table)
    head, keyword, rest = select.partition("SELECT")
    if not keyword:
        raise StepError("the feature SQL has no SELECT")
    return f"{head}SELECT\n    click_time,{rest}"


def extract_sql(settings: Settings, outfile: str) -> str:
    return (f"USE {settings.database};\n"
            "SET @@sync_job=true;\n"
            f"{training_select(settings.table).strip()}\n"
            f"INTO OUTFILE '{outfile}' OPTIONS(mode='overwrite', format='parquet');")


def deploy_sql(settings: Settings) -> str:
    # DEPLOY also adds the indexes the windows need (OpenMLDB does so on an empty table or,
    # since 0.8, by back-filling): running it before the online bootstrap keeps that cheap.
    return (f"USE {settings.database};\n"
            f"DEPLOY IF NOT EXISTS {deployment_name(settings)} "
            f"{feature_sql(settings.table).strip()};")


def render(sql: str, params: Mapping[str, str]) -> str:
    """Fill `${name}` placeholders as DolphinScheduler does; an unknown name is an error."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise StepError(f"SQL placeholder ${{{name}}} has no value")
        return params[name]
    return _PLACEHOLDER.sub(value, sql)


def run_script(settings: Settings, execute_mode: str, sql: str) -> list[str]:
    """Run `;`-separated statements in one session, as DolphinScheduler's OpenMLDB task does;
    returns one summary line per statement."""
    conn = connect(settings.store_url, settings.database,
                   offline_executor=settings.offline_executor, spark_master=settings.spark_master)
    summaries: list[str] = []
    try:
        cursor = conn.cursor()
        cursor.execute(f"SET @@execute_mode='{execute_mode}'")
        for statement in split_statements(sql):
            log.info("%s", statement)
            cursor.execute(statement)
            rows = getattr(cursor, "rowcount", -1)
            summaries.append(_headline(statement) + (f" ({rows} rows)" if rows >= 0 else ""))
        conn.commit()
    finally:
        conn.close()
    return summaries


def _headline(statement: str) -> str:
    """A statement shortened for people: its first words, and where a SELECT writes to."""
    words = statement.split()
    headline = " ".join(words[:6]) + (" …" if len(words) > 6 else "")
    outfile = re.search(r"INTO\s+OUTFILE\s+'[^']*'", statement, re.IGNORECASE)
    return f"{headline} {outfile.group(0)}" if outfile else headline
