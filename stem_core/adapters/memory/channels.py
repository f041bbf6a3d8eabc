"""``MemoryChannels``: broadcasts, a copy to every subscription listening at publish time.

A broadcast appends ``(channel, envelope)`` to the inbox of each subscription on the
channel and wakes its consumer; ``read`` drains one inbox as deliveries, inside the
consumer's receive step. A copy needs no settling, so its receipt (``b:<n>``) is only a
unique name for the delivery.
"""

from __future__ import annotations

import itertools

from ...envelope import Delivery, Envelope
from .connection import MemoryConnection
from .store import MemorySubscription, wake

# Process-wide, so a broadcast receipt is unique whichever broker handed it out.
_broadcast_ids = itertools.count(1)


class MemoryChannels:
    """Broadcast publishing and per-subscription broadcast reading."""

    def __init__(self, connection: MemoryConnection) -> None:
        self._connection = connection
        self._store = connection.store

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        self._connection.check_open()
        with self._store.lock:
            listening = self._store.listening(channel)
            for sub in listening:
                sub.inbox.append((channel, envelope))
        wake(listening)

    @staticmethod
    def read(sub: MemorySubscription) -> list[Delivery]:
        """The copies waiting for ``sub``, oldest first, as deliveries (under the store's lock)."""
        items = list(sub.inbox)
        sub.inbox.clear()
        return [
            Delivery(envelope=envelope, receipt=f"b:{next(_broadcast_ids)}", queue=channel, channel=channel)
            for channel, envelope in items
        ]


__all__ = ["MemoryChannels"]
