"""``Directory``: what every part of ``Ops`` asks before it reads or acts: which queues
exist, which workers are alive and what they serve, which queues are paused, what the
broker can do, and what time it is.

"Now" comes from one injected clock, so a front end with its own notion of time (the
TUI's, frozen in snapshot tests) gives every verdict and age the same instant.
"""

from __future__ import annotations

import difflib
import logging
from datetime import datetime
from typing import Any, Callable

from ..clock import parse_iso, utcnow
from ..contract import Broker, ResultBackend, WorkerHeartbeat
from ..control.liveness import STALE_AFTER_S, heartbeat_age, is_live, live_worker_ids, stale_window
from ..control.pause import paused_queues
from ..control.protocol import REPLY_QUEUE_PREFIX
from ..envelope import validate_name
from ..errors import StemError, Unsupported

log = logging.getLogger("stem.ops")

Clock = Callable[[], datetime]
Heartbeats = dict[str, WorkerHeartbeat]
Pauses = dict[str, dict[str, Any]]

# Queues whose names start with these are the control plane's plumbing, not work.
INTERNAL_QUEUE_PREFIXES = (REPLY_QUEUE_PREFIX,)
# At most this many in-flight messages are read per queue (leases, explain).
LEASES_LIMIT = 1000
# Actions show this many affected items.
SAMPLE_SIZE = 5
# Names shown in "known queues: ..." when a name matches none closely.
KNOWN_QUEUES_SHOWN = 10


class UnknownQueue(StemError, LookupError):
    """A queue name that no broker state, heartbeat or pause knows about."""


def system_now() -> datetime:
    """``utcnow()`` looked up at each call, so a test that freezes ``stem_core``'s clock
    reaches an ``Ops`` built before it (a default argument would keep the original)."""
    return utcnow()


def is_internal(queue: str) -> bool:
    return queue.startswith(INTERNAL_QUEUE_PREFIXES)


def entry_time(entry: dict[str, Any], key: str) -> datetime | None:
    """A time field of a heartbeat ``inflight`` entry (ISO text), or None."""
    raw = entry.get(key)
    if not isinstance(raw, str):
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        return None


def entry_state(entry: dict[str, Any]) -> str:
    """``active`` or ``reserved`` (older heartbeats carry only ``started_at``)."""
    state = entry.get("state")
    if state in ("active", "reserved"):
        return str(state)
    return "active" if entry.get("started_at") else "reserved"


def active_count(hb: WorkerHeartbeat) -> int:
    """Tasks a worker is running now (its prefetched ones wait)."""
    return sum(1 for e in hb.inflight if entry_state(e) == "active")


class Directory:
    """Known queues, live workers and pauses, read through the contracts."""

    def __init__(self, broker: Broker, backend: ResultBackend, *, stale_after: float | None = None,
                 clock: Clock = system_now) -> None:
        self.broker = broker
        self.backend = backend
        self.stale_after = stale_after
        self.clock = clock

    def now(self) -> datetime:
        return self.clock()

    # -- workers and pauses ------------------------------------------------------------

    async def heartbeats(self) -> Heartbeats:
        return {hb.worker_id: hb for hb in await self.backend.list_heartbeats()}

    def alive(self, hb: WorkerHeartbeat | None, now: datetime) -> bool:
        return hb is not None and is_live(hb, now, self.stale_after)

    def stale_window(self, hb: WorkerHeartbeat) -> float:
        """Seconds after its last heartbeat that ``hb``'s worker still counts as live."""
        return stale_window(hb, self.stale_after)

    async def live_ids(self) -> list[str]:
        """The workers a control command reaches now (the ``ControlClient`` rule), sorted."""
        return live_worker_ids(await self.backend.list_heartbeats(), self.now(), self.stale_after)

    def serving(self, queue: str, heartbeats: Heartbeats, now: datetime) -> list[WorkerHeartbeat]:
        """Live workers that consume ``queue`` and have not paused it."""
        return [hb for hb in heartbeats.values()
                if self.alive(hb, now) and queue in hb.queues and queue not in hb.paused_queues]

    async def pauses(self) -> Pauses:
        return await paused_queues(self.backend)

    # -- queues --------------------------------------------------------------------------

    async def known_queues(self, heartbeats: Heartbeats | None = None, pauses: Pauses | None = None) -> list[str]:
        """Queues with messages, queues live workers consume, and paused queues (sorted,
        control-plane plumbing left out)."""
        if heartbeats is None:
            heartbeats = await self.heartbeats()
        if pauses is None:
            pauses = await self.pauses()
        names = set(await self.broker.list_queues())
        for hb in heartbeats.values():
            names.update(q for q in hb.queues if isinstance(q, str))
        names.update(pauses)
        return sorted(n for n in names if not is_internal(n))

    async def require_queue(self, queue: str, *, heartbeats: Heartbeats | None = None,
                            pauses: Pauses | None = None) -> str:
        """``queue`` if it is known, else ``UnknownQueue`` naming the closest known ones
        (``heartbeats``/``pauses``: already read by the caller, not read again)."""
        validate_name(queue)
        known = await self.known_queues(heartbeats, pauses)
        if queue in known:
            return queue
        # A broker that cannot list its queues (RabbitMQ without its management API)
        # still counts the messages of one it is asked about.
        (stats,) = await self.broker.queue_stats([queue])
        if stats.pending or stats.delayed or stats.dead or stats.inflight:
            return queue
        close = difflib.get_close_matches(queue, known, n=3)
        if close:
            hint = f"; did you mean {', '.join(close)}?"
        elif known:
            shown = ", ".join(known[:KNOWN_QUEUES_SHOWN]) + (" ..." if len(known) > KNOWN_QUEUES_SHOWN else "")
            hint = f"; known queues: {shown}"
        else:
            hint = "; there are no queues yet"
        raise UnknownQueue(f"unknown queue {queue!r}{hint}")

    # -- capabilities --------------------------------------------------------------------

    def require_peek(self, what: str) -> None:
        if not self.broker.capabilities.peek:
            raise Unsupported(f"the {self.broker.scheme} broker cannot peek at messages, so Stem cannot {what}")

    def require_dead_letters(self) -> None:
        if not self.broker.capabilities.dead_letters:
            raise Unsupported(f"the {self.broker.scheme} broker keeps no dead letters")


__all__ = [
    "Clock",
    "Directory",
    "INTERNAL_QUEUE_PREFIXES",
    "LEASES_LIMIT",
    "SAMPLE_SIZE",
    "STALE_AFTER_S",
    "UnknownQueue",
    "active_count",
    "entry_state",
    "entry_time",
    "heartbeat_age",
    "is_internal",
    "log",
    "system_now",
]
