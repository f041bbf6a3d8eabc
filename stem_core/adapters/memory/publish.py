"""``MemoryPublisher``: messages into the store, and the waiting consumers woken at once.

The memory adapter has no fused ``enqueue``: its result backend keeps a store of its own,
so ``Broker.enqueue`` takes the contract's two steps (statuses, then messages).
"""

from __future__ import annotations

from ...envelope import Envelope
from .connection import MemoryConnection
from .store import wake


class MemoryPublisher:
    """``publish`` and ``publish_many`` (the contract hands both over as one list)."""

    def __init__(self, connection: MemoryConnection) -> None:
        self._connection = connection
        self._store = connection.store

    async def publish(self, envelopes: list[Envelope]) -> None:
        self._connection.check_open()
        store = self._store
        with store.lock:
            waiting = store.waiting_on(store.publish(envelopes))
        wake(waiting)


__all__ = ["MemoryPublisher"]
