"""`fraudflow init` and `fraudflow sql`: thin commands over the feature store."""

from __future__ import annotations

from pathlib import Path

import click

from core.config import Settings
from features.connection import connect
from features.datagen import generate_to_file
from features.dialect import split_statements
from features.store import init_store


@click.command("init")
@click.pass_obj
def init(settings: Settings) -> None:
    """Create the database, table and deployment in the configured store (idempotent)."""
    created = init_store(settings.store_url, settings.database, settings.table,
                         settings.deployment)
    click.echo("created: " + ", ".join(created) if created else "store already initialised")


@click.command("sql")
@click.argument("statements")
@click.option("--mode", type=click.Choice(["offline", "online"]), default="offline",
              show_default=True, help="execute_mode for the statements.")
@click.pass_obj
def sql(settings: Settings, statements: str, mode: str) -> None:
    """Run OpenMLDB SQL statements (separated by ;) against the store; prints result rows."""
    conn = connect(settings.store_url, settings.database,
                   offline_executor=settings.offline_executor, spark_master=settings.spark_master)
    try:
        cursor = conn.cursor()
        cursor.execute(f"SET @@execute_mode='{mode}'")
        for statement in split_statements(statements):
            cursor.execute(statement)
            if cursor.description:
                click.echo("\t".join(col[0] for col in cursor.description))
                for row in cursor.fetchall():
                    click.echo("\t".join("NULL" if v is None else str(v) for v in row))
        conn.commit()
    finally:
        conn.close()


@click.command("generate")
@click.option("--rows", type=click.IntRange(min=0), required=True, help="Number of clicks.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .csv (Kaggle format) or .parquet.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", default="2017-11-06 16:00:00", show_default=True,
              help="First click time (wall clock, as in Kaggle's files).")
@click.option("--hours", type=float, default=72, show_default=True, help="Time span.")
def generate(rows: int, out: Path, seed: int, start: str, hours: float) -> None:
    """Write synthetic TalkingData-like clicks (seeded, hot IPs, bot bursts)."""
    path = generate_to_file(rows, out, seed=seed, start=start, hours=hours)
    click.echo(f"wrote {rows} clicks to {path}")


commands = [init, sql, generate]
