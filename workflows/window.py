"""The time window a workflow run works on, in OpenMLDB's wall clock.

OpenMLDB reads wall-clock timestamps ("2017-11-09 16:00:00", Kaggle's click_time) as UTC+8, the
lake partitions are named by that wall clock, and DolphinScheduler runs the schedule in
Asia/Shanghai (UTC+8): one clock everywhere. A window is named by its end hour, `yyyyMMddHH`,
which DolphinScheduler renders as `$[yyyyMMddHH]` from a run's schedule time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.clock import UTC8, epoch_ms_of_wall
from workflows.exceptions import StepError

SCHEDULE_TIMEZONE = "Asia/Shanghai"  # UTC+8 all year, the zone the DS schedule runs in
WINDOW_ID_FORMAT = "%Y%m%d%H"


@dataclass(frozen=True)
class Window:
    """The `hours` before `end` (a naive wall-clock hour, exclusive)."""

    end: datetime
    hours: int

    @property
    def start(self) -> datetime:
        return self.end - timedelta(hours=self.hours)

    @property
    def id(self) -> str:
        return self.end.strftime(WINDOW_ID_FORMAT)

    @property
    def start_ms(self) -> int:
        return epoch_ms_of_wall(self.start)

    @property
    def end_ms(self) -> int:
        return epoch_ms_of_wall(self.end)

    def describe(self) -> dict[str, str]:
        return {"start": self.start.isoformat(sep=" "), "end": self.end.isoformat(sep=" "),
                "timezone": "UTC+8"}

    @classmethod
    def ending(cls, text: str, hours: int) -> Window:
        """The window ending at `text` (`yyyyMMddHH` or ISO wall clock), floored to the hour."""
        try:
            end = datetime.strptime(text, WINDOW_ID_FORMAT) if text.isdigit() \
                else datetime.fromisoformat(text)
        except ValueError:
            raise StepError(f"window end {text!r} is neither yyyyMMddHH nor an ISO "
                            "date-time") from None
        if end.tzinfo is not None:
            end = end.astimezone(UTC8).replace(tzinfo=None)
        return cls(end.replace(minute=0, second=0, microsecond=0), hours)
