"""`fraudflow produce|ingest|archive`: the streaming commands."""

from __future__ import annotations

from pathlib import Path

import click

from core.cli import quiet_kafka_client, settings_of
from ingest import consumers, producer
from ingest.kafka_io import BatchPolicy

_topic_option = click.option("--topic", default=None,
                             help="Kafka topic [default: FRAUDFLOW_TOPIC or clicks].")
_until_idle_option = click.option(
    "--until-idle", "until_idle", type=float, default=None, metavar="SECONDS",
    help="Exit once caught up (no lag) and idle this long (tests, demo).")
_metrics_port_option = click.option(
    "--metrics-port", type=int, default=None,
    help="Serve Prometheus metrics on this port (0 = off) [default: FRAUDFLOW_INGEST_METRICS_PORT "
         "or 9101 for ingest, FRAUDFLOW_ARCHIVE_METRICS_PORT or 9102 for archive].")


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
    settings = settings_of(ctx)
    quiet_kafka_client()
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
    settings = settings_of(ctx)
    quiet_kafka_client()
    stats = consumers.run_ingest(settings, topic or settings.topic, group,
                                 BatchPolicy(batch_size, max_latency), until_idle,
                                 _metrics(metrics_port, settings.ingest_metrics_port))
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
    settings = settings_of(ctx)
    quiet_kafka_client()
    stats = consumers.run_archive(settings, topic or settings.topic, group,
                                  lake_dir or settings.lake_dir, file_format, flush_seconds,
                                  until_idle, _metrics(metrics_port, settings.archive_metrics_port))
    click.echo(f"archive: consumed {stats.consumed} messages in {stats.seconds:.1f}s")


def _metrics(port: int | None, default: int) -> int:
    return default if port is None else port


commands = [produce, ingest, archive]
