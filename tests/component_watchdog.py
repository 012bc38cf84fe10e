"""A watchdog for the JVMs the test fixtures start detached (the broker, DolphinScheduler)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def stop_when_gone(pid: int, var_dir: Path, module: str) -> subprocess.Popen[bytes]:
    """Run `<module>.stop(var_dir)` should the pytest process `pid` die without teardown
    (SIGKILL, CI timeout): a detached JVM would otherwise outlive the session, holding its
    memory, ports and tmp data dir."""
    stop = f"import sys; from {module} import stop; stop(sys.argv[1])"
    script = 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; shift; exec "$@"'
    return subprocess.Popen(["sh", "-c", script, "sh", str(pid), sys.executable, "-c", stop,
                             str(var_dir)],
                            cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
