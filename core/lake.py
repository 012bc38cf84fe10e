"""The lake: the hourly click files the archive writes and the offline import reads.

Layout of one topic's lake, `<lake>/<topic>/`:
    date=YYYY-MM-DD/hour=HH/<topic>-p<P>-<first>-<last>.parquet|.csv   committed files
    …/<name>.tmp                                                        not yet committed
    _lake.json                                                          {"partition_clock": …}

Partitions are named by the UTC+8 wall-clock hour of each click (`core.clock`): the clock in
which OpenMLDB reads timestamps, a workflow window is named and DolphinScheduler runs the
schedule, so "hour 16 is due once the window ends at 17:00" holds without conversions.
Lakes written before `_lake.json` existed named partitions by the UTC hour; they carry no
marker, are read (and extended) in UTC, and say so in their marker from then on: a lake never
mixes clocks, and no file has to move (manifests of what was imported stay valid).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from core.clock import UTC8_OFFSET_MS
from core.events import ID_FIELDS
from core.exceptions import LakeError

FORMATS = ("parquet", "csv")
TEMP_SUFFIX = ".tmp"
MARKER = "_lake.json"
WALL_CLOCK = "UTC+8"
LEGACY_CLOCK = "UTC"
#: The Arrow schema of a lake file: the table's columns, click_time in epoch milliseconds.
SCHEMA = pa.schema([(name, pa.int32()) for name in ID_FIELDS]
                   + [("click_time", pa.int64()), ("is_attributed", pa.int32())])

_HOUR_MS = 3_600_000
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.(parquet|csv)$")
_OFFSETS_MS = {WALL_CLOCK: UTC8_OFFSET_MS, LEGACY_CLOCK: 0}


@dataclass(frozen=True)
class LakeFile:
    """A committed lake file."""

    path: Path
    key: str  # relative to the lake root (`<topic>/date=…/hour=…/<name>`): unique and stable
    hour: datetime  # the naive UTC+8 wall-clock hour of its clicks
    file_format: str


@dataclass(frozen=True)
class TopicLake:
    """One topic's files in a lake directory."""

    root: Path
    topic: str

    @property
    def home(self) -> Path:
        return Path(self.root) / self.topic

    def partition_clock(self) -> str:
        """The clock this lake names partitions by: UTC+8 unless it predates the marker."""
        try:
            return str(json.loads((self.home / MARKER).read_text())["partition_clock"])
        except FileNotFoundError:
            return LEGACY_CLOCK if any(self._committed_paths()) else WALL_CLOCK
        except (ValueError, KeyError) as exc:
            raise LakeError(f"{self.home / MARKER} is unreadable ({exc}): it should say "
                            f'{{"partition_clock": "{WALL_CLOCK}"}} or "{LEGACY_CLOCK}"') from None

    def claim(self) -> str:
        """Write the marker unless there is one (the writer's first act); returns the clock."""
        clock = self.partition_clock()
        marker = self.home / MARKER
        if not marker.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            temp = marker.with_name(marker.name + TEMP_SUFFIX)
            temp.write_text(json.dumps({"partition_clock": clock}))
            os.replace(temp, marker)
        return clock

    def hour_folder(self, hour_start_ms: int, clock: str) -> Path:
        """The partition folder of the hour starting at this epoch ms, in the lake's clock."""
        moment = datetime.fromtimestamp((hour_start_ms + _OFFSETS_MS[clock]) / 1000, UTC)
        return self.home / f"date={moment:%Y-%m-%d}" / f"hour={moment.hour:02d}"

    def write_hours(self, table: pa.Table, name: str) -> list[Path]:
        """Write clicks (SCHEMA's columns) as one parquet file per hour, each appearing
        atomically, as the archive commits them; for loading a lake from a file at once."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        clock = self.claim()
        table = table.select(SCHEMA.names).cast(SCHEMA)
        hours = pc.subtract(table["click_time"], pc.remainder(table["click_time"], _HOUR_MS))
        written = []
        for hour in sorted(set(hours.to_pylist())):
            folder = self.hour_folder(int(hour), clock)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}.parquet"
            temp = folder / f"{name}.parquet{TEMP_SUFFIX}"
            pq.write_table(table.filter(pc.equal(hours, hour)), temp)
            os.replace(temp, path)
            written.append(path)
        return written

    def files(self) -> list[LakeFile]:
        """Every committed file, oldest hour first (temp files end in .tmp or start with a dot)."""
        shift = timedelta(milliseconds=UTC8_OFFSET_MS - _OFFSETS_MS[self.partition_clock()])
        found = []
        for path in self._committed_paths():
            relative = path.relative_to(self.home).as_posix()
            match = _PARTITION.match(relative)
            if match is None:
                continue
            named = datetime.fromisoformat(f"{match.group(1)} {match.group(2)}:00:00")
            found.append(LakeFile(path, f"{self.topic}/{relative}", named + shift,
                                  match.group(3)))
        return sorted(found, key=lambda f: (f.hour, f.key))

    def _committed_paths(self) -> Iterable[Path]:
        for file_format in FORMATS:
            # pathlib's glob, unlike Spark's, matches hidden (half-written) files: skip them
            yield from (path for path in self.home.glob(f"date=*/hour=*/*.{file_format}")
                        if not path.name.startswith("."))


def hour_start_ms(click_time_ms: int) -> int:
    """The start of the hour a click falls in (hours are whole in UTC and in UTC+8 alike)."""
    return click_time_ms - click_time_ms % _HOUR_MS
