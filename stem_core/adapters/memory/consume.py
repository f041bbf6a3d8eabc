"""``MemoryConsumer``: subscriptions, claims and waiting, and settling what was claimed.

A claim leases the best ready messages across the subscription's queues (higher
priority, then older, then publish order) and reads the subscription's broadcast copies,
in one step under the store's lock. Idle consumers wait on a future that publishing,
broadcasting or giving messages back resolves (no polling); a waiting consumer also
wakes by itself when the next delayed message or lease of its queues falls due, so an
expired lease is redelivered on time even if nothing else happens. Futures are resolved
thread-safely, so brokers in other threads or event loops may share a store.

Settling goes by receipt: a receipt that no longer holds its message (the lease expired
and the message went to someone else, or an operator requeued it) settles nothing, and
``extend_lease`` raises ``LeaseLost`` for it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Callable

from ..._aio import make_waker
from ...clock import monotonic, utcnow
from ...contract.broker import Broker, Subscription
from ...contract.types import DeadLetterEntry
from ...envelope import Delivery, Envelope
from ...errors import LeaseLost
from .channels import MemoryChannels
from .connection import MemoryConnection
from .store import INFLIGHT, READY, MemorySubscription, QueueState, heap_top, wake


class MemoryConsumer:
    """The consuming and settling primitives over one connection's store."""

    def __init__(self, connection: MemoryConnection, channels: MemoryChannels,
                 lease_for: Callable[[Envelope], float], *, dead_letter_retention: float) -> None:
        self._connection = connection
        self._dead_letter_retention = dead_letter_retention
        self._store = connection.store
        self._channels = channels
        self._lease_for = lease_for
        # This broker's open subscriptions, so closing it can wake their waiting consumers.
        self._subscriptions: set[MemorySubscription] = set()

    # -- subscriptions --------------------------------------------------------------

    async def open_subscription(self, sub: Subscription) -> None:
        self._connection.check_open()
        state = MemorySubscription(sub.queues, sub.channels, sub.consumer)
        sub.state = state
        with self._store.lock:
            self._store.subscribe(state)
        self._subscriptions.add(state)

    async def close_subscription(self, sub: Subscription) -> None:
        state: MemorySubscription | None = sub.state
        if state is None:
            return
        with self._store.lock:
            self._store.unsubscribe(state)
        self._subscriptions.discard(state)

    def wake_all(self) -> None:
        """Wake every consumer waiting on this broker (it was closed: they find out and raise)."""
        wake(list(self._subscriptions))

    # -- receiving ------------------------------------------------------------------

    async def receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: MemorySubscription = sub.state
        store = self._store
        deadline = monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            self._connection.check_open()
            with store.lock:
                out = self._channels.read(state)
                if limit > 0 and sub.queues:
                    out.extend(self._claim(state, limit))
                if out:
                    return out
                now = monotonic()
                if now >= deadline:
                    return []
                fut: asyncio.Future[None] = loop.create_future()
                state.wake = make_waker(fut)
                # Wake for the next delayed message or lease only when we could take it.
                due = store.next_deadline(sub.queues) if limit > 0 else None
            wait = deadline - now if due is None else max(0.0, min(deadline, due) - now)
            try:
                await asyncio.wait({fut}, timeout=wait)
            finally:
                state.wake = None

    def _claim(self, state: MemorySubscription, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` ready messages across the subscription's queues, best first
        (under the store's lock)."""
        store = self._store
        now = monotonic()
        queues = [q for name in state.queues if (q := store.queues.get(name)) is not None]
        for q in queues:
            store.tick(q, now)
        out: list[Delivery] = []
        while len(out) < limit:
            best: tuple[Any, ...] | None = None
            best_q: QueueState | None = None
            for q in queues:
                entry = heap_top(q.ready, READY)
                if entry is not None and (best is None or entry[:3] < best[:3]):
                    best, best_q = entry, q
            if best is None or best_q is None:
                break
            msg = best[-1]
            receipt = store.lease(best_q, msg, state.consumer, self._lease_for(msg.envelope), now)
            out.append(Delivery(envelope=msg.envelope, receipt=receipt, queue=msg.queue,
                                lease_expires_at=msg.lease_expires_at, delivery_count=msg.delivery_count))
        return out

    async def unclaim(self, deliveries: list[Delivery]) -> None:
        """Give back claims that never reached the consumer, as if never claimed (ready
        now, delivery not counted)."""
        self._connection.check_open()
        store = self._store
        touched: set[str] = set()
        with store.lock:
            for delivery in deliveries:
                msg = store.receipts.get(delivery.receipt)
                if msg is None or msg.state != INFLIGHT:
                    continue
                store.fence(msg)
                msg.delivery_count = max(msg.delivery_count - 1, 0)
                msg.lease_expires_at = None
                store.move(store.queue(msg.queue), msg, READY)
                touched.add(msg.queue)
            waiting = store.waiting_on(touched)
        wake(waiting)

    # -- settling -------------------------------------------------------------------

    def _settles(self, delivery: Delivery) -> bool:
        """True for a queue delivery (a broadcast copy needs no settling)."""
        self._connection.check_open()
        return delivery.channel is None

    async def ack(self, delivery: Delivery) -> None:
        if not self._settles(delivery):
            return
        store = self._store
        with store.lock:
            msg = store.receipts.get(delivery.receipt)
            if msg is not None:
                q = store.queue(msg.queue)
                q.completed_total += 1
                store.delete(q, msg)

    async def nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        """Give the message back as its attempt + 1 copy (``Broker.requeued_envelope``), or
        drop it when not ``requeue``."""
        if not self._settles(delivery):
            return
        requeued = Broker.requeued_envelope(delivery.envelope, delay) if requeue else None
        store = self._store
        with store.lock:
            msg = store.receipts.get(delivery.receipt)
            if msg is None:
                return
            q = store.queue(msg.queue)
            if requeued is None:
                store.delete(q, msg)
                return
            store.fence(msg)
            msg.envelope = requeued
            msg.lease_expires_at = None
            store.place(q, msg, monotonic())
            waiting = store.waiting_on({q.name})
        wake(waiting)

    async def extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        """Move the lease to now + ``seconds``. A lease that expired but was not yet handed
        to anyone else is taken back by its holder."""
        self._connection.check_open()
        store = self._store
        with store.lock:
            msg = store.receipts.get(delivery.receipt)
            if msg is None:
                raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
            msg.lease_deadline = monotonic() + seconds
            msg.lease_expires_at = utcnow() + timedelta(seconds=seconds)
            store.move(store.queue(msg.queue), msg, INFLIGHT)
            return msg.lease_expires_at

    async def dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        if not self._settles(delivery):
            return
        store = self._store
        with store.lock:
            msg = store.receipts.get(delivery.receipt)
            if msg is None:
                return
            q = store.queue(msg.queue)
            store.bury(q, DeadLetterEntry(envelope=msg.envelope, reason=reason, meta=meta, dead_at=utcnow()),
                       self._dead_letter_retention)
            store.delete(q, msg)


__all__ = ["MemoryConsumer"]
