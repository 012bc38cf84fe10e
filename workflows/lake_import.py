"""Step `import`: load new lake files into the offline table, each file exactly once.

The archive consumer writes `<lake>/<topic>/date=YYYY-MM-DD/hour=HH/<unique>.parquet|.csv`
(`core.lake`: partitions named by the UTC+8 wall-clock hour), each file appearing atomically.
A manifest remembers every file already loaded into this store's offline table, so late files
of an old hour are picked up by the next run and nothing is loaded twice. New files are
hard-linked into one staging folder and loaded with a single LOAD DATA per file format (on a
cluster each LOAD DATA is a Spark job: one per file would not keep up).

Only a crash between LOAD DATA returning and the manifest line being written could load a
batch twice; the line is written and fsynced immediately after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.config import Settings
from core.lake import LakeFile, TopicLake
from features.connection import connect, is_embedded
from workflows.layout import Layout, exclusive_lock
from workflows.window import Window

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ImportResult:
    files: int
    rows: int
    already_imported: int
    not_yet_due: int

    def summary(self) -> str:
        return (f"imported {self.files} new lake file(s), {self.rows} rows; "
                f"{self.already_imported} already imported, {self.not_yet_due} after the window")


class Manifest:
    """The lake files loaded into one offline table (JSON lines, one line per batch)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def imported(self) -> set[str]:
        if not self.path.exists():
            return set()
        names: set[str] = set()
        for line in self.path.read_text().splitlines():
            try:
                names.update(json.loads(line)["files"])
            except (ValueError, KeyError):
                continue  # a line torn by a crash: its batch was not recorded
        return names

    def record(self, batch: str, files: list[str], rows: int) -> None:
        entry = {"batch": batch, "files": files, "rows": rows,
                 "imported_at": datetime.now(UTC).isoformat()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def manifest_for(settings: Settings, layout: Layout) -> Manifest:
    """One manifest per offline table: a new store starts with nothing imported."""
    store = settings.store_url
    if is_embedded(store):
        store = "embedded://" + str(Path(store.removeprefix("embedded://")).absolute())
    key = hashlib.sha256(f"{store}|{settings.database}|{settings.table}".encode()).hexdigest()
    return Manifest(layout.imports / f"{settings.database}.{settings.table}-{key[:12]}.jsonl")


def import_new_files(settings: Settings, layout: Layout, window: Window) -> ImportResult:
    """Load every lake file of an hour before the window's end not loaded before."""
    manifest = manifest_for(settings, layout)
    with exclusive_lock(manifest.path.with_suffix(".lock"), "an import into this table"):
        staging = layout.staging / manifest.path.stem
        shutil.rmtree(staging, ignore_errors=True)  # left by a crashed import
        done = manifest.imported()
        files = TopicLake(settings.lake_dir, settings.topic).files()
        due = [f for f in files if f.hour < window.end]
        new = [f for f in due if f.key not in done]
        rows = _load(settings, staging, manifest, new) if new else 0
        return ImportResult(len(new), rows, len(due) - len(new), len(files) - len(due))


def _load(settings: Settings, staging: Path, manifest: Manifest, files: list[LakeFile]) -> int:
    batch = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    folder = staging / batch
    folder.mkdir(parents=True)
    try:
        for number, lake_file in enumerate(files):
            _link(lake_file.path, folder / f"{number:06d}.{lake_file.file_format}")
        conn = connect(settings.store_url, settings.database)
        rows = 0
        try:
            cursor = conn.cursor()
            cursor.execute("SET @@execute_mode='offline'")
            cursor.execute("SET @@sync_job=true")
            for file_format in sorted({f.file_format for f in files}):
                # deep_copy: the staged links are deleted once the load returns.
                cursor.execute(f"LOAD DATA INFILE '{folder}/*.{file_format}' INTO TABLE "
                               f"{settings.table} OPTIONS(format='{file_format}', "
                               "header=true, mode='append', deep_copy=true)")
                rows += max(getattr(cursor, "rowcount", -1), 0)
        finally:
            conn.close()
        manifest.record(batch, [f.key for f in files], rows)
        log.info("loaded %d lake files (%d rows) as batch %s", len(files), rows, batch)
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem: copy instead
        shutil.copyfile(source, target)
