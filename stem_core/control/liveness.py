"""Which heartbeats count as live workers: the one rule the control client and ops share.

A worker writes a heartbeat every ``interval`` seconds (``HEARTBEAT_INTERVAL_SECONDS`` by
default) and says so in the heartbeat; the backend keeps it for ``heartbeat_ttl`` (60 s),
well past a crash. A worker is live while its last heartbeat is younger than one interval
plus a grace (``LIVENESS_GRACE_SHARE`` of the interval, at least ``LIVENESS_GRACE_MIN_S``):
a worker that stops heartbeating (killed, stopped, its event loop hung) is presumed gone
within 1.5 intervals, so ops reports it within two. A heartbeat that names no interval
(an older worker) is live for ``STALE_AFTER_S``. An explicit ``stale_after`` (the CLI's
``--stale-after``) overrides the rule for every worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from ..contract import WorkerHeartbeat
from ..settings import HEARTBEAT_INTERVAL_SECONDS

# A heartbeat without an interval is presumed dead after three missed default beats.
STALE_AFTER_S = 3 * HEARTBEAT_INTERVAL_SECONDS
# The grace after one interval: half an interval, at least one second (a busy event loop
# or a slow backend write delays a beat by that much without the worker being gone).
LIVENESS_GRACE_SHARE = 0.5
LIVENESS_GRACE_MIN_S = 1.0


def heartbeat_age(hb: WorkerHeartbeat, now: datetime) -> float:
    return max(0.0, (now - hb.timestamp).total_seconds())


def stale_window(hb: WorkerHeartbeat, stale_after: float | None = None) -> float:
    """Seconds after its last heartbeat that the worker of ``hb`` still counts as live."""
    if stale_after is not None:
        return stale_after
    if hb.interval is None:
        return STALE_AFTER_S
    return hb.interval + max(LIVENESS_GRACE_MIN_S, LIVENESS_GRACE_SHARE * hb.interval)


def is_live(hb: WorkerHeartbeat, now: datetime, stale_after: float | None = None) -> bool:
    return heartbeat_age(hb, now) <= stale_window(hb, stale_after)


def live_worker_ids(heartbeats: Iterable[WorkerHeartbeat], now: datetime, stale_after: float | None = None) -> list[str]:
    """The ids of the live workers among ``heartbeats``, sorted."""
    return sorted(hb.worker_id for hb in heartbeats if is_live(hb, now, stale_after))


__all__ = [
    "LIVENESS_GRACE_MIN_S",
    "LIVENESS_GRACE_SHARE",
    "STALE_AFTER_S",
    "heartbeat_age",
    "is_live",
    "live_worker_ids",
    "stale_window",
]
