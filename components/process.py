"""What every locally run component's lifecycle shares: locks, pid files, detached launches,
waiting until a server answers, stopping it, and the log lines that explain a failure.

Each component (the Kafka broker, DolphinScheduler) keeps its files in a home directory of its
own and passes its own error class, so a message names the component that failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from components.exceptions import ComponentError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def last_lines(text: str, count: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def java(what: str, error: type[ComponentError]) -> str:
    """The `java` of $JAVA_HOME, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise error(f"Java 17+ (`java`) is needed to run {what}, and is not on PATH")
    return found


def launch(argv: Sequence[str], home: Path, console: Path, what: str,
           error: type[ComponentError], extra_env: Mapping[str, str] | None = None) -> int:
    """Run `argv` detached in `home` and return its pid.

    It goes through ``sh ... &`` so that once sh exits the process is re-parented to init: it
    outlives this process (``fraudflow … start`` returns) and leaves no zombie or Popen to reap
    here. `console` (stdout and stderr, where a JVM's crash ends up) is truncated: it holds
    this run's output only. The process gets this one's environment plus `extra_env`.
    """
    script = 'out=$1; shift; "$@" </dev/null >"$out" 2>&1 & echo $!'
    proc = subprocess.run(["sh", "-c", script, "sh", str(console), *argv],
                          cwd=home, capture_output=True, text=True, start_new_session=True,
                          env={**os.environ, **(extra_env or {})}, check=False)
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise error(f"could not launch {what}: {proc.stderr.strip()}")
    return int(proc.stdout.strip())


def runs_as(pid: int, markers: Sequence[str]) -> bool:
    """Whether `pid` is alive and its command line holds every marker (so neither a recycled
    pid nor a zombie counts)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: fall back to "the pid exists"
        return alive(pid)
    return all(marker.encode() in cmdline for marker in markers)


def running_pid(pid_file: Path, markers: Sequence[str]) -> int | None:
    """The pid in `pid_file` if that process still runs as `markers`; a stale file is removed."""
    text = read_text(pid_file)
    if text is None:
        return None
    pid = int(text) if text.isdigit() else None
    if pid is not None and runs_as(pid, markers):
        return pid
    pid_file.unlink(missing_ok=True)  # stale: the process died, or the pid names another one
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(pid, 0) until its parent reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def kill(pid: int, grace: float, what: str, error: type[ComponentError]) -> None:
    """SIGTERM (a JVM shuts down cleanly on it), then SIGKILL if still up after `grace`."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            log.warning("%s (pid %d) ignored SIGTERM for %gs; killing it", what, pid, grace)
    raise error(f"{what} (pid {pid}) survived SIGKILL")


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        # Like a JVM server's own listener: ignore TIME_WAIT leftovers of a server just stopped.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def accepts(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on `port`."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def wait_until_ready(ready: Callable[[], bool], pid: int, markers: Sequence[str],
                     timeout: float, what: str, error: type[ComponentError],
                     explain: Callable[[], str], poll: float = 0.2,
                     failed: Callable[[], bool] = lambda: False) -> None:
    """Poll `ready()` until true; raise `error` with `explain()` (log tails) if the process
    exits first, `failed()` says it will never be ready, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not runs_as(pid, markers):
            raise error(f"{what} (pid {pid}) exited while starting:\n{explain()}")
        if failed():
            raise error(f"{what} (pid {pid}) failed to start:\n{explain()}")
        if time.monotonic() > deadline:
            raise error(f"{what} (pid {pid}) was not ready within {timeout:g}s:\n{explain()}")
        time.sleep(poll)


def log_tail(logs: Sequence[tuple[Path, int]], count: int = 30) -> str:
    """The last lines of each log past its offset (what this run wrote), for error messages."""
    parts = []
    for path, start in logs:
        size = file_size(path)
        offset = 0 if size < start else start  # rolled over meanwhile: all of it is this run's
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            handle.seek(max(offset, size - 16384))
            text = handle.read().decode(errors="replace").strip()
            if text:
                parts.append(f"--- {path} (last lines) ---\n{last_lines(text, count)}")
    return "\n".join(parts) or "(no output in " + ", ".join(str(p) for p, _ in logs) + ")"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` (VmRSS), or None where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
