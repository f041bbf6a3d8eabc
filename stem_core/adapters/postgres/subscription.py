"""What the PostgreSQL consumer keeps per subscription, and the index that wakes it.

One broker has one LISTEN connection. Its notifications name a queue (``q:<queue>``
when the queue went from empty to non-empty, ``d:<queue>`` when delayed rows arrived)
or a broadcast channel (``b:<channel>``); ``PostgresSubscriptions`` maps those names to
the subscriptions waiting on them and sets their wake events.
"""

from __future__ import annotations

import asyncio
import uuid

from ...clock import monotonic
from ...contract.broker import Subscription

NEVER = float("inf")


class PostgresSubscription:
    """Per-subscription state kept in ``Subscription.state``: the wake event, when the
    queues were last maintained and when the next row falls due (consumer), and the
    broadcast cursor's key and timers (channels)."""

    __slots__ = ("key", "queues", "channels", "wake", "dirty", "broadcast_dirty", "next_due", "last_maintain",
                 "last_broadcast", "last_touch", "outage_since")

    def __init__(self, key: str, queues: tuple[str, ...], channels: tuple[str, ...]) -> None:
        self.key = key
        self.queues = queues
        self.channels = channels
        self.wake = asyncio.Event()
        self.dirty = True
        self.broadcast_dirty = True
        self.next_due = NEVER
        self.last_maintain = 0.0
        self.last_broadcast = 0.0
        self.last_touch = monotonic()
        self.outage_since: float | None = None


class PostgresSubscriptions:
    """The open subscriptions of one broker, indexed by queue and by channel, and the
    prefetch they add up to (the settle pool is sized for it)."""

    def __init__(self) -> None:
        self._by_queue: dict[str, set[PostgresSubscription]] = {}
        self._by_channel: dict[str, set[PostgresSubscription]] = {}
        self.prefetch_total = 0

    def add(self, sub: Subscription) -> PostgresSubscription:
        """Make ``sub``'s state (a fresh broadcast cursor key) and index it."""
        st = PostgresSubscription(uuid.uuid4().hex, sub.queues, sub.channels)
        sub.state = st
        for name in sub.queues:
            self._by_queue.setdefault(name, set()).add(st)
        for name in sub.channels:
            self._by_channel.setdefault(name, set()).add(st)
        if sub.queues:
            self.prefetch_total += sub.prefetch
        return st

    def forget(self, sub: Subscription) -> None:
        st: PostgresSubscription | None = sub.state
        if st is None:
            return
        for index, names in ((self._by_queue, st.queues), (self._by_channel, st.channels)):
            for name in names:
                group = index.get(name)
                if group is not None:
                    group.discard(st)
                    if not group:
                        del index[name]
        if sub.queues:
            self.prefetch_total -= sub.prefetch
        sub.state = None

    def on_notify(self, payload: str) -> None:
        kind, _, name = payload.partition(":")
        if kind == "b":
            for st in self._by_channel.get(name, ()):
                st.broadcast_dirty = True
                st.wake.set()
            return
        for st in self._by_queue.get(name, ()):
            if kind == "d":
                st.dirty = True
            st.wake.set()

    def on_reconnect(self) -> None:
        """Notifications sent while the listener was away are lost: everyone re-checks."""
        for st in self._all():
            st.dirty = st.broadcast_dirty = True
            st.wake.set()

    def wake_all(self) -> None:
        """Wake every waiter (the broker is closing: they find it closed and stop)."""
        for st in self._all():
            st.wake.set()

    def _all(self) -> list[PostgresSubscription]:
        return [st for subs in (*self._by_queue.values(), *self._by_channel.values()) for st in subs]


__all__ = ["NEVER", "PostgresSubscription", "PostgresSubscriptions"]
