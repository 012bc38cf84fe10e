"""Every command that binds a port says so in one line when the port is taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("command, flag", [
    (["ingest", "--metrics-port", "{port}"], "--metrics-port"),
    (["archive", "--metrics-port", "{port}"], "--metrics-port"),
    (["serve", "--host", "127.0.0.1", "--port", "{port}"], "--port"),
    (["scheduler", "--metrics-port", "{port}"], "--metrics-port"),
    (["kafka", "start", "--port", "{port}"], "--port"),
])
def test_a_taken_port_is_one_clear_line(taken_port: int, tmp_path: Path, command: list[str],
                                        flag: str) -> None:
    env = {**os.environ, "FRAUDFLOW_VAR_DIR": str(tmp_path / "var"),
           "FRAUDFLOW_STORE_URL": f"embedded://{tmp_path / 'store'}",
           "FRAUDFLOW_MODEL_DIR": str(tmp_path / "models"),
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    args = [part.format(port=taken_port) for part in command]
    proc = subprocess.run([sys.executable, "-m", "fraudflow", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert str(taken_port) in errors[0] and flag in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
