"""Burst mode's stop condition: the worker's queues are drained.

Drained means nothing pending or in flight, and nothing delayed that falls due within
``BURST_DELAYED_HORIZON_S`` (a retry waiting out its backoff is still work to do; a task
scheduled for next week is not).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..clock import utcnow
from ..contract import Broker
from ..errors import Unsupported
from ..settings import RETRY_MAX_SECONDS

BURST_CHECK_INTERVAL_S = 0.1
# Burst mode keeps waiting for delayed messages due within this horizon (retries included).
BURST_DELAYED_HORIZON_S = RETRY_MAX_SECONDS
BURST_PEEK_LIMIT = 1000


async def queues_drained(broker: Broker, queues: Sequence[str]) -> bool:
    """True when ``queues`` hold no work due within the horizon (no queues: drained)."""
    if not queues:
        return True
    horizon = utcnow().timestamp() + BURST_DELAYED_HORIZON_S
    with_delayed: list[str] = []
    for stats in await broker.queue_stats(list(queues)):
        if stats.pending or stats.inflight:
            return False
        if stats.delayed:
            try:
                waiting = await broker.peek(stats.queue, state="delayed", limit=BURST_PEEK_LIMIT)
            except Unsupported:
                return False
            if any(m.envelope.not_before is None or m.envelope.not_before.timestamp() <= horizon for m in waiting):
                return False
            with_delayed.append(stats.queue)
    # A delayed task that fell due between the count and the peek is no longer in the
    # peek (a broker may even move it to ready while peeking): count again, so it is
    # seen as pending rather than missed.
    if with_delayed:
        for stats in await broker.queue_stats(with_delayed):
            if stats.pending or stats.inflight:
                return False
    return True


__all__ = ["BURST_CHECK_INTERVAL_S", "BURST_DELAYED_HORIZON_S", "BURST_PEEK_LIMIT", "queues_drained"]
