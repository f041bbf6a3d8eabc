"""State and helpers shared by the read, explain and action halves of ``Ops``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..clock import parse_iso, utcnow
from ..contract import Broker, ResultBackend, WorkerHeartbeat
from ..control.liveness import STALE_AFTER_S, heartbeat_age, is_live
from ..control.pause import paused_queues
from ..control.protocol import REPLY_QUEUE_PREFIX
from ..envelope import validate_name
from ..errors import ConfigurationError, StemError
from .audit import default_actor
from .rates import RateTracker

log = logging.getLogger("stem.ops")

# Queues whose names start with these are the control plane's plumbing, not work.
INTERNAL_QUEUE_PREFIXES = (REPLY_QUEUE_PREFIX,)
# At most this many in-flight messages are read per queue (leases, explain).
LEASES_LIMIT = 1000
# Actions show this many affected items.
SAMPLE_SIZE = 5


class UnknownQueue(StemError, LookupError):
    """A queue name that no broker state, heartbeat or pause knows about."""


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


class OpsBase:
    """The connected adapters, who acts, and the rate history."""

    def __init__(
        self,
        broker: Broker,
        backend: ResultBackend,
        *,
        actor: str | None = None,
        stale_after: float = STALE_AFTER_S,
        persist_rates: bool = True,
        tracker: RateTracker | None = None,
    ) -> None:
        if not isinstance(broker, Broker) or not isinstance(backend, ResultBackend):
            raise ConfigurationError("Ops needs a connected Broker and ResultBackend")
        if isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)) or not stale_after > 0:
            raise ValueError(f"stale_after must be positive seconds, got {stale_after!r}")
        self.broker = broker
        self.backend = backend
        self.actor = actor or default_actor()
        self.stale_after = float(stale_after)
        self.persist_rates = persist_rates
        self.rates = tracker or RateTracker()
        self._rates_loaded = False
        self._persisted_at: datetime | None = None
        self._app: Any = None

    @property
    def namespace(self) -> str:
        return self.broker.namespace

    # -- shared reads ---------------------------------------------------------------

    async def _heartbeats(self) -> dict[str, WorkerHeartbeat]:
        return {hb.worker_id: hb for hb in await self.backend.list_heartbeats()}

    def _alive(self, hb: WorkerHeartbeat | None, now: datetime) -> bool:
        return hb is not None and is_live(hb, now, self.stale_after)

    async def _pauses(self) -> dict[str, dict[str, Any]]:
        return await paused_queues(self.backend)

    async def _known_queues(
        self, heartbeats: dict[str, WorkerHeartbeat] | None = None, pauses: dict[str, Any] | None = None
    ) -> list[str]:
        """Queues with messages, queues live workers consume, and paused queues (sorted,
        control-plane plumbing left out)."""
        if heartbeats is None:
            heartbeats = await self._heartbeats()
        if pauses is None:
            pauses = await self._pauses()
        names = set(await self.broker.list_queues())
        for hb in heartbeats.values():
            names.update(q for q in hb.queues if isinstance(q, str))
        names.update(pauses)
        return sorted(n for n in names if not is_internal(n))

    async def require_queue(
        self, queue: str, *, heartbeats: dict[str, WorkerHeartbeat] | None = None, pauses: dict[str, Any] | None = None
    ) -> str:
        """``queue`` if it is known, else ``UnknownQueue`` naming the closest known ones
        (``heartbeats``/``pauses``: already read by the caller, not read again)."""
        validate_name(queue)
        known = await self._known_queues(heartbeats, pauses)
        if queue in known:
            return queue
        # A broker that cannot list its queues (RabbitMQ without its management API)
        # still counts the messages of one it is asked about.
        (stats,) = await self.broker.queue_stats([queue])
        if stats.pending or stats.delayed or stats.dead or stats.inflight:
            return queue
        import difflib

        close = difflib.get_close_matches(queue, known, n=3)
        if close:
            hint = f"; did you mean {', '.join(close)}?"
        elif known:
            shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            hint = f"; known queues: {shown}"
        else:
            hint = "; there are no queues yet"
        raise UnknownQueue(f"unknown queue {queue!r}{hint}")

    def _now(self) -> datetime:
        return utcnow()


__all__ = [
    "INTERNAL_QUEUE_PREFIXES",
    "LEASES_LIMIT",
    "OpsBase",
    "SAMPLE_SIZE",
    "STALE_AFTER_S",
    "UnknownQueue",
    "entry_state",
    "entry_time",
    "heartbeat_age",
    "is_internal",
    "log",
]
