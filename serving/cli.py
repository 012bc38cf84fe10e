"""`fraudflow serve`: the predict server, gunicorn workers running `serving:create_app()`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from core.config import ENV_VARS, Settings, get_settings
from core.ports import check_port_free

GUNICORN_CONFIG = Path(__file__).with_name("gunicorn_conf.py")
APP_TARGET = "serving:create_app()"


def gunicorn_command(app_target: str, host: str, port: int, workers: int,
                     threads: int) -> list[str]:
    """The gunicorn command line of the server (the benchmark runs its floor app with it).
    gthread workers even with one thread: unlike sync workers they keep client connections
    alive, which saves a TCP handshake per request for clients with connection pools."""
    return [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG),
            "--bind", f"{host}:{port}", "--worker-class", "gthread",
            "--workers", str(workers), "--threads", str(threads), app_target]


def server_environment(settings: Settings, port: int) -> dict[str, str]:
    """This environment plus the settings (flags included) as FRAUDFLOW_* variables, which
    the workers read, and the port's own Prometheus multiprocess directory."""
    env = dict(os.environ)
    for field, variable in ENV_VARS.items():
        value = getattr(settings, field)
        if value is not None:
            env[variable] = str(value)
    metrics_dir = settings.var_dir.resolve() / "prometheus" / f"serve-{port}"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


@click.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port [default: FRAUDFLOW_PORT, else 8881].")
@click.option("--workers", type=click.IntRange(min=1), default=len(os.sched_getaffinity(0)),
              show_default="one per core", help="Worker processes.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads per worker (each keeps its own feature-store connection).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int | None, workers: int, threads: int) -> None:
    """Run the predict server (POST /predict, admin, /readyz, /metrics) under gunicorn.

    Gunicorn replaces this process, so signals reach it directly: SIGTERM stops the server
    gracefully, SIGHUP reloads the workers."""
    settings = ctx.find_object(Settings) or get_settings()
    port = settings.port if port is None else port
    check_port_free(port, "predict server", "--port or FRAUDFLOW_PORT",
                    host="" if host == "0.0.0.0" else host)
    command = gunicorn_command(APP_TARGET, host, port, workers, threads)
    os.execve(command[0], command, server_environment(settings, port))


commands = [serve]
