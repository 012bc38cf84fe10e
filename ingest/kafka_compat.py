"""A fix for a kafka-python 3.0.x bug that stops a consumer for good after a rebalance.

The group leader records its metadata snapshot while it computes the assignment, inside the
JoinGroup -> SyncGroup task. When a rebalance was triggered by a metadata change (every new
consumer has one: its first assignment is made before the topic's metadata arrives) and
poll()'s timeout expires while that task is in flight, `need_rejoin()` already answers False:
the next poll never awaits the task, the assignment never completes, and the partitions stay
revoked-pending (not fetchable) while heartbeats keep the member in the group. Seen here with
a 5 ms poll during the second join: the member fetched nothing for minutes.

The fix keeps `need_rejoin()` true while a join is prepared but not completed (`rejoining`),
so the next poll awaits the task in flight.
"""

from __future__ import annotations

import functools
from typing import Any

import kafka
from kafka.coordinator.consumer import ConsumerCoordinator

_FIXED_ATTR = "_fraudflow_finishes_interrupted_joins"


def finish_interrupted_joins() -> None:
    """Patch ConsumerCoordinator.need_rejoin (kafka-python 3.0.x only; idempotent)."""
    if not kafka.__version__.startswith("3.0.") or getattr(ConsumerCoordinator, _FIXED_ATTR,
                                                           False):
        return
    original = ConsumerCoordinator.need_rejoin

    @functools.wraps(original)
    def need_rejoin(self: Any) -> bool:
        return bool(original(self) or self.rejoining)

    ConsumerCoordinator.need_rejoin = need_rejoin
    setattr(ConsumerCoordinator, _FIXED_ATTR, True)
