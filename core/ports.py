"""Local TCP ports: finding a free one, and refusing a taken one with one clear line."""

from __future__ import annotations

import errno
import socket

from core.exceptions import ConfigError

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int, what: str, how_to_change: str, host: str = "") -> None:
    """ConfigError naming the port and the flag/env var that changes it when something already
    listens on it (a bind would fail later with a traceback from deep inside a library)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"{what}: cannot bind port {port}: {exc.strerror}") from None
            raise ConfigError(f"{what}: port {port} is already in use by another process; "
                              f"choose another with {how_to_change}") from None
