"""`fraudflow monitoring build` (or `python -m monitoring build`): regenerate the generated
monitoring files (prometheus.yml for the compose stack, the Grafana dashboards' JSON)."""

from __future__ import annotations

import click

from monitoring.config import PROMETHEUS_CONFIG, compose_prometheus_config
from monitoring.dashboards import write_dashboards


@click.group("monitoring")
def monitoring() -> None:
    """Prometheus configuration and Grafana dashboards."""


@monitoring.command()
def build() -> None:
    """Write monitoring/prometheus.yml and monitoring/grafana/dashboards/*.json."""
    PROMETHEUS_CONFIG.write_text(compose_prometheus_config())
    for path in [PROMETHEUS_CONFIG, *write_dashboards()]:
        click.echo(f"wrote {path}")


commands = [monitoring]
