"""`fraudflow scheduler`: the embedded runner on the workflow's Quartz cron, until stopped.

The cron is read in Asia/Shanghai like DolphinScheduler's schedule, and each run's window ends
at its fire time, as `$[yyyyMMddHH]` makes it on DolphinScheduler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from workflows.window import SCHEDULE_TIMEZONE

log = logging.getLogger(__name__)


def next_fire(cron: str, after: datetime) -> datetime:
    """The first fire time of the Quartz `cron`, read in Asia/Shanghai, strictly after the
    timezone-aware `after` (croniter reads a cron in the zone of its start time)."""
    start = after.astimezone(ZoneInfo(SCHEDULE_TIMEZONE))
    fire: datetime = croniter(cron, start, second_at_beginning=True).get_next(datetime)
    return fire


def run_on_schedule(cron: str, run: Callable[[datetime], None], stop: threading.Event,
                    echo: Callable[[str], None] = print) -> None:
    """Call `run(fire_time)` at each fire time until `stop` is set; a run that raises is
    logged and the schedule goes on (the next fire time may find the problem gone)."""
    while not stop.is_set():
        fire = next_fire(cron, datetime.now(UTC))
        echo(f"next run at {fire.isoformat()}")
        if stop.wait(max(0.0, (fire - datetime.now(UTC)).total_seconds())):
            break
        try:
            run(fire)
        except Exception:
            log.exception("the run at %s failed", fire.isoformat())
    echo("scheduler stopped")
