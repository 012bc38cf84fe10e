"""`fraudflow kafka start|stop|status`: the local single-node broker (see ingest/broker.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from fraudflow.config import Settings, get_settings
from ingest import broker, consumers, producer
from ingest.kafka_io import BatchPolicy

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _settings(ctx: click.Context) -> Settings:
    # The top-level `fraudflow` group puts its (flag-overridden) Settings in ctx.obj.
    found = ctx.find_object(Settings)
    return found if found is not None else get_settings()


def default_port(bootstrap_servers: str) -> int:
    """The port of a single local ``host:port`` bootstrap address, else Kafka's usual 9092."""
    host, sep, port = bootstrap_servers.strip().rpartition(":")
    if sep and "," not in bootstrap_servers and host in _LOCAL_HOSTS and port.isdigit():
        return int(port)
    return 9092


def _resolve(ctx: click.Context, port: int | None, var_dir: Path | None) -> tuple[int, Path]:
    settings = _settings(ctx)
    return (port if port is not None else default_port(settings.kafka_bootstrap_servers),
            var_dir if var_dir is not None else settings.var_dir)


def _quiet_kafka_client() -> None:
    # The readiness probe is a kafka-python admin client, which logs every connect at INFO.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("kafka").setLevel(logging.WARNING)


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
    _quiet_kafka_client()
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
    _quiet_kafka_client()
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


_topic_option = click.option("--topic", default=None,
                             help="Kafka topic [default: FRAUDFLOW_TOPIC or clicks].")
_until_idle_option = click.option(
    "--until-idle", "until_idle", type=float, default=None, metavar="SECONDS",
    help="Exit once caught up (no lag) and idle this long (tests, demo).")
_metrics_port_option = click.option(
    "--metrics-port", type=int, default=None,
    help="Serve Prometheus metrics on this port (0 = off).")


@click.command()
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path),
              help="Kaggle-format CSV or Parquet file to replay.")
@click.option("--synthetic", type=click.IntRange(min=1), default=None, metavar="N",
              help="Send N generated clicks instead of a file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --synthetic.")
@_topic_option
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Events per second (default: as fast as acknowledged).")
@click.option("--speedup", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Follow event time, this many times faster than real time.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Stop after N events.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def produce(ctx: click.Context, input_path: Path | None, synthetic: int | None, seed: int,
            topic: str | None, rate: float | None, speedup: float | None, limit: int | None,
            progress: bool) -> None:
    """Send clicks to Kafka (keyed by ip, JSON, acks=all); prints the acknowledged count."""
    if (input_path is None) == (synthetic is None):
        raise click.UsageError("give exactly one of --input FILE or --synthetic N")
    if rate and speedup:
        raise click.UsageError("--rate and --speedup are exclusive")
    settings = _settings(ctx)
    _quiet_kafka_client()
    if input_path is not None:
        chunks, source = producer.file_rows(input_path), input_path.name
    else:
        chunks, source = producer.synthetic_rows(synthetic or 0, seed), f"synthetic-{seed}"
    stats = producer.produce(chunks, settings.kafka_bootstrap_servers, topic or settings.topic,
                             source, rate=rate, speedup=speedup, limit=limit,
                             progress=progress)
    click.echo(f"acknowledged {stats.acknowledged} of {stats.sent} events "
               f"({stats.failed} failed) in {stats.seconds:.1f}s")
    if stats.failed or stats.acknowledged != stats.sent:
        ctx.exit(1)


@click.command()
@_topic_option
@click.option("--group", default="online-ingest", show_default=True, help="Consumer group.")
@click.option("--batch-size", type=click.IntRange(min=1), default=BatchPolicy.max_records,
              show_default=True)
@click.option("--max-latency", type=click.FloatRange(min=0.001),
              default=BatchPolicy.max_latency_s, show_default=True,
              help="Seconds a batch may wait for the writer to be free.")
@_until_idle_option
@_metrics_port_option
@click.pass_context
def ingest(ctx: click.Context, topic: str | None, group: str, batch_size: int,
           max_latency: float, until_idle: float | None, metrics_port: int | None) -> None:
    """Consume clicks into the online table; invalid events go to <topic>.dlq."""
    settings = _settings(ctx)
    _quiet_kafka_client()
    stats = consumers.run_ingest(settings, topic or settings.topic, group,
                                 BatchPolicy(batch_size, max_latency), until_idle,
                                 _metrics(metrics_port, 9101))
    click.echo(f"ingest: consumed {stats.consumed} messages in {stats.seconds:.1f}s")


@click.command()
@_topic_option
@click.option("--group", default="archive", show_default=True, help="Consumer group.")
@click.option("--lake", "lake_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Lake directory [default: FRAUDFLOW_LAKE_DIR].")
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]),
              default="parquet", show_default=True)
@click.option("--flush-seconds", type=click.FloatRange(min=0.1), default=30.0,
              show_default=True, help="Longest time events wait in memory before a file.")
@_until_idle_option
@_metrics_port_option
@click.pass_context
def archive(ctx: click.Context, topic: str | None, group: str, lake_dir: Path | None,
            file_format: str, flush_seconds: float, until_idle: float | None,
            metrics_port: int | None) -> None:
    """Consume clicks into hourly lake files (exactly once) for the offline import."""
    settings = _settings(ctx)
    _quiet_kafka_client()
    stats = consumers.run_archive(settings, topic or settings.topic, group,
                                  lake_dir or settings.lake_dir, file_format, flush_seconds,
                                  until_idle, _metrics(metrics_port, 9102))
    click.echo(f"archive: consumed {stats.consumed} messages in {stats.seconds:.1f}s")


def _metrics(port: int | None, default: int) -> int:
    return default if port is None else port


commands = [kafka, produce, ingest, archive]
