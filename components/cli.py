"""`fraudflow kafka|dolphinscheduler start|stop|status`, `fraudflow spark fetch|health`:
the local real components' lifecycle commands."""

from __future__ import annotations

from pathlib import Path

import click

from components import maven
from components.dolphinscheduler import server as dolphinscheduler_server
from components.dolphinscheduler.config import ServerSettings
from components.kafka import broker
from components.spark import runtime
from core.cli import quiet_kafka_client, settings_of

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}



def default_port(bootstrap_servers: str) -> int:
    """The port of a single local ``host:port`` bootstrap address, else Kafka's usual 9092."""
    host, sep, port = bootstrap_servers.strip().rpartition(":")
    if sep and "," not in bootstrap_servers and host in _LOCAL_HOSTS and port.isdigit():
        return int(port)
    return 9092


def _resolve(ctx: click.Context, port: int | None, var_dir: Path | None) -> tuple[int, Path]:
    settings = settings_of(ctx)
    return (port if port is not None else default_port(settings.kafka_bootstrap_servers),
            var_dir if var_dir is not None else settings.var_dir)



_port_option = click.option(
    "--port", type=int, default=None,
    help="Broker port [default: from KAFKA_BOOTSTRAP_SERVERS if local, else 9092].")
_var_dir_option = click.option(
    "--var-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Data directory; the broker lives in VAR_DIR/kafka [default: FRAUDFLOW_VAR_DIR].")


@click.group()
def kafka() -> None:
    """Run a local single-node Kafka broker (KRaft) from Maven Central jars."""


@kafka.command()
@_port_option
@_var_dir_option
@click.option("--controller-port", type=int, default=None,
              help="KRaft controller port [default: PORT+1 if free].")
@click.option("--heap-mb", type=int, default=512, show_default=True, help="JVM heap size.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the broker to answer.")
@click.pass_context
def start(ctx: click.Context, port: int | None, var_dir: Path | None,
          controller_port: int | None, heap_mb: int, timeout: float) -> None:
    """Start the broker (fetching its jars on first use); do nothing if it already runs."""
    quiet_kafka_client()
    port, var_dir = _resolve(ctx, port, var_dir)
    info = broker.start(var_dir, port=port, controller_port=controller_port,
                        heap_mb=heap_mb, timeout=timeout)
    if info.already_running:
        click.echo(f"Kafka broker already running at {info.bootstrap_servers} (pid {info.pid})")
    else:
        click.echo(f"Kafka broker started at {info.bootstrap_servers} (pid {info.pid}) "
                   f"in {info.startup_seconds:.1f}s; log: {info.log_path}")


@kafka.command()
@_var_dir_option
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.pass_context
def stop(ctx: click.Context, var_dir: Path | None, timeout: float) -> None:
    """Stop the broker (its data is kept); do nothing if it is not running."""
    _, var_dir = _resolve(ctx, None, var_dir)
    if broker.stop(var_dir, timeout=timeout):
        click.echo("Kafka broker stopped")
    else:
        click.echo("Kafka broker was not running")


@kafka.command()
@_var_dir_option
@click.pass_context
def status(ctx: click.Context, var_dir: Path | None) -> None:
    """Show whether the broker runs; exit 1 if it does not, 3 if it runs but does not answer."""
    quiet_kafka_client()
    _, var_dir = _resolve(ctx, None, var_dir)
    found = broker.status(var_dir)
    if found is None:
        click.echo("Kafka broker not running")
        ctx.exit(1)
    state = "running" if found.answering else "running but not answering (starting?)"
    click.echo(f"Kafka broker {state} at {found.bootstrap_servers} (pid {found.pid}, "
               f"controller port {found.controller_port}, home {broker.kafka_dir(found.var_dir)})")
    if not found.answering:
        ctx.exit(3)


@click.group()
def spark() -> None:
    """OpenMLDB's own batch engine on Spark (the `spark` offline executor, `make conformance`)."""


@spark.command()
def fetch() -> None:
    """Fetch the OpenMLDB jars and native library into the cache (FRAUDFLOW_SPARK_CACHE)."""
    found = runtime.ensure_runtime()
    cache = runtime.cache_dir()
    click.echo(f"OpenMLDB {runtime.OPENMLDB_VERSION} batch engine in {cache} "
               f"({maven.dir_size(cache) / 2**30:.1f} GiB); native library in {found.native_dir}")


@spark.command()
@click.pass_context
def health(ctx: click.Context) -> None:
    """Start a session on FRAUDFLOW_SPARK_MASTER and run a query through the engine."""
    master = settings_of(ctx).spark_master
    engine = runtime.start(master)
    try:
        versions = engine.health()
    finally:
        engine.stop()
    click.echo(f"OpenMLDB batch engine on {master} answers ({versions}); session started in "
               f"{engine.startup_seconds:.1f}s")



@click.group("dolphinscheduler")
def dolphinscheduler() -> None:
    """Run a local DolphinScheduler 3.1.1 standalone server (REST API and Python gateway)
    from Maven Central jars; the retraining workflow is submitted to it."""


def _describe(found: dolphinscheduler_server.ServerStatus) -> str:
    rss = found.rss_bytes
    memory = f", RSS {rss / 2**20:.0f} MiB" if rss else ""
    return (f"REST {found.rest_url} (Swagger {found.swagger_url}), gateway "
            f"{dolphinscheduler_server.HOST}:{found.ports.gateway} (pid {found.pid}{memory})")


@dolphinscheduler.command("start")
@_var_dir_option
@click.option("--timeout", type=float, default=180.0, show_default=True,
              help="Seconds to wait for the server to be ready.")
@click.pass_context
def ds_start(ctx: click.Context, var_dir: Path | None, timeout: float) -> None:
    """Start the server (fetching its jars on first use); do nothing if it already runs.
    Ports: FRAUDFLOW_DS_REST_PORT, FRAUDFLOW_DS_GATEWAY_PORT; schema: FRAUDFLOW_DS_SCHEMA."""
    _, var_dir = _resolve(ctx, None, var_dir)
    info = dolphinscheduler_server.start(var_dir, ServerSettings.from_env(), timeout=timeout)
    if info.already_running:
        click.echo(f"DolphinScheduler already running: {_describe(info)}")
    else:
        click.echo(f"DolphinScheduler {dolphinscheduler_server.VERSION} started in "
                   f"{info.startup_seconds:.1f}s: {_describe(info)}; log: {info.log_path}")


@dolphinscheduler.command("stop")
@_var_dir_option
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.pass_context
def ds_stop(ctx: click.Context, var_dir: Path | None, timeout: float) -> None:
    """Stop the server (its in-memory database, and so every definition, goes with it)."""
    _, var_dir = _resolve(ctx, None, var_dir)
    if dolphinscheduler_server.stop(var_dir, timeout=timeout):
        click.echo("DolphinScheduler stopped")
    else:
        click.echo("DolphinScheduler was not running")


@dolphinscheduler.command("status")
@_var_dir_option
@click.pass_context
def ds_status(ctx: click.Context, var_dir: Path | None) -> None:
    """Show whether the server runs; exit 1 if it does not, 3 if it runs but is not ready."""
    _, var_dir = _resolve(ctx, None, var_dir)
    found = dolphinscheduler_server.status(var_dir)
    if found is None:
        click.echo("DolphinScheduler not running")
        ctx.exit(1)
    state = "running" if found.answering else "running but not ready (starting?)"
    click.echo(f"DolphinScheduler {state}: {_describe(found)}")
    if not found.answering:
        ctx.exit(3)


commands = [kafka, spark, dolphinscheduler]
