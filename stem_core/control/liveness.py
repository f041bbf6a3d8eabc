"""Which heartbeats count as live workers: the one rule the control client and ops share.

A worker writes a heartbeat every ``HEARTBEAT_INTERVAL_SECONDS``; the backend keeps it for
``heartbeat_ttl`` (60 s), well past a crash. A heartbeat older than ``stale_after``
(default: three missed beats) means its worker is presumed dead: commands do not wait
for it and ops does not count it as serving its queues.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from ..contract import WorkerHeartbeat
from ..settings import HEARTBEAT_INTERVAL_SECONDS

# A heartbeat older than this means its worker is presumed dead: three missed beats.
STALE_AFTER_S = 3 * HEARTBEAT_INTERVAL_SECONDS


def heartbeat_age(hb: WorkerHeartbeat, now: datetime) -> float:
    return max(0.0, (now - hb.timestamp).total_seconds())


def is_live(hb: WorkerHeartbeat, now: datetime, stale_after: float = STALE_AFTER_S) -> bool:
    return heartbeat_age(hb, now) <= stale_after


def live_worker_ids(heartbeats: Iterable[WorkerHeartbeat], now: datetime, stale_after: float = STALE_AFTER_S) -> list[str]:
    """The ids of the live workers among ``heartbeats``, sorted."""
    return sorted(hb.worker_id for hb in heartbeats if is_live(hb, now, stale_after))


__all__ = ["STALE_AFTER_S", "heartbeat_age", "is_live", "live_worker_ids"]
