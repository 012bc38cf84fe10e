"""Fetching a component's artifacts from Maven Central with `mvn`, once, into a cache.

A fetch runs under a file lock (concurrent starters wait for one download) and is stamped with
a digest of the pom that declares it: a version bump refetches, and a half-finished fetch (no
stamp) is redone rather than trusted. While Maven downloads, a progress bar counts the bytes
arriving in the target directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from components.exceptions import ComponentError
from components.process import last_lines, locked, read_text

log = logging.getLogger(__name__)

STAMP = ".fetched"


def cache_root() -> Path:
    """Where components keep downloads that outlive a checkout: ``$XDG_CACHE_HOME/fraudflow``
    (``~/.cache/fraudflow``), so every worktree, test session and CI run on a machine share
    them."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fraudflow"


def fetch_once(pom: Path, target: Path, maven_args: Sequence[str], what: str,
               error: type[ComponentError] = ComponentError,
               after: Callable[[], None] | None = None, clean: bool = True,
               stamp_inputs: Sequence[Path] = ()) -> Path:
    """Run ``mvn -f pom <maven_args>`` filling `target`, unless a fetch of this pom is done.

    `after` runs inside the lock once Maven succeeded (unpacking, say) before the stamp is
    written. `stamp_inputs` are further files the resolution reads (a local repository of
    POMs), part of the stamp. `clean` removes an old or partial `target` first (two versions
    of one library on a classpath break in odd ways). Raises `error` with Maven's last lines
    when it fails.
    """
    stamp = target / STAMP
    digest = hashlib.sha256(pom.read_bytes())
    for extra in sorted(stamp_inputs):
        digest.update(str(extra.relative_to(pom.parent)).encode())
        digest.update(extra.read_bytes())
    wanted = digest.hexdigest()
    if read_text(stamp) == wanted:
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise error(f"Maven (`mvn`) is needed to fetch {what}, and is not on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock"):
        if read_text(stamp) == wanted:  # another process fetched it while we waited
            return target
        if clean:
            shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s into %s", what, target)
        with _progress(target, what):
            proc = subprocess.run(
                [mvn, "-B", "-q", "-f", str(pom), *maven_args],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise error(f"fetching {what} failed (mvn exit {proc.returncode}):\n"
                        + last_lines(proc.stdout + proc.stderr))
        if after is not None:
            after()
        stamp.write_text(wanted)
    return target


@contextlib.contextmanager
def _progress(folder: Path, what: str) -> Iterator[None]:
    """A byte counter of `folder` on stderr while the block runs (Maven's own is off: -q)."""
    done = threading.Event()
    tty = sys.stderr.isatty()
    bar = tqdm(desc=f"fetching {what}", unit="B", unit_scale=True, unit_divisor=1024,
               file=sys.stderr, mininterval=0.5 if tty else 15, leave=True)

    def watch() -> None:
        seen = 0
        while not done.wait(0.5 if tty else 5):
            size = dir_size(folder)
            bar.update(max(0, size - seen))
            seen = max(seen, size)
        bar.update(max(0, dir_size(folder) - seen))

    thread = threading.Thread(target=watch, name="fetch-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


def dir_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total
