"""OpenMLDB's clock, defined once: epoch milliseconds, and wall-clock time in UTC+8.

OpenMLDB reads a timestamp string without an offset as UTC+8 wall clock (TalkingData's
`2017-11-06 14:32:21` is a Chinese wall-clock time) and computes `hour()`/`day()` in UTC+8.
Lake partitions are named by the same wall clock (see `core.lake`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import numpy.typing as npt

UTC8_OFFSET_MS = 8 * 3_600_000
UTC8 = timezone(timedelta(hours=8), "UTC+8")
_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)


def epoch_ms_from_wall(wall: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Naive UTC+8 wall-clock datetimes (numpy datetime64 or pandas) as epoch milliseconds."""
    return np.asarray(wall).astype("datetime64[ms]").astype(np.int64) - UTC8_OFFSET_MS


def epoch_ms_of_wall(wall: datetime) -> int:
    """Epoch milliseconds of one naive UTC+8 wall-clock datetime."""
    return (wall - _EPOCH) // _ONE_MS - UTC8_OFFSET_MS


def wall_clock_now() -> datetime:
    """Now, as a naive UTC+8 wall-clock datetime."""
    return datetime.now(UTC8).replace(tzinfo=None)


def wall_clock(ms: int) -> datetime:
    """The naive UTC+8 wall-clock datetime of an epoch-millisecond instant."""
    return _EPOCH + timedelta(milliseconds=ms + UTC8_OFFSET_MS)


def parse_timestamp_ms(text: str) -> int:
    """An ISO 8601 / "YYYY-MM-DD HH:MM:SS" string as epoch ms: naive strings are UTC+8 wall
    clock, as OpenMLDB reads them; strings with an offset are that instant. ValueError if it
    is not a timestamp."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return (moment - _EPOCH) // _ONE_MS - UTC8_OFFSET_MS
    return int(moment.timestamp() * 1000)
