"""The `fraudflow` command: a thin click group; each package contributes its subcommands."""

from __future__ import annotations

import logging
import sys

import click

from core.config import get_settings
from core.exceptions import FraudFlowError


class _Group(click.Group):
    """Turns FraudFlow errors into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FraudFlowError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--store", "store_url", help="Feature store URL (env FRAUDFLOW_STORE_URL).")
@click.option("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS).")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.pass_context
def main(ctx: click.Context, store_url: str | None, bootstrap_servers: str | None,
         verbose: bool) -> None:
    """FraudFlow: real-time click-fraud pipeline."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = get_settings().with_overrides(store_url=store_url,
                                            kafka_bootstrap_servers=bootstrap_servers)




def _register() -> None:
    from benchmarks.cli import bench
    from components.cli import commands as component_commands
    from features.cli import commands as feature_commands
    from ingest.cli import commands as ingest_commands
    from monitoring.cli import commands as monitoring_commands
    from serving.cli import commands as serving_commands
    from workflows.cli import commands as workflow_commands

    for command in (*component_commands, *feature_commands, *ingest_commands, *serving_commands,
                    *workflow_commands, *monitoring_commands, bench):
        main.add_command(command)


_register()
