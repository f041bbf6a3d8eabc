"""``MemoryBroker``: the executable spec of every rule in ``stem_core.contract.broker``.

Single process only (``durable=False``, ``cross_process=False``); everything else the
contract promises is here: priority across queues, delays, leases with true extension and
redelivery, receipt fencing, broadcast fan-out, dead letters and O(1) queue counters.

Idle consumers wait on a future that ``publish``/``broadcast`` resolve (no polling); a
waiting consumer also wakes by itself when the next delayed message or lease of its
queues falls due, so an expired lease is redelivered on time even if nothing else
happens. Futures are resolved thread-safely, so brokers in other threads or event
loops may share a store.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any, ClassVar

from ..._aio import make_waker
from ...clock import monotonic, to_epoch, utcnow
from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, ConfigurationError, LeaseLost
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .queues import DELAYED, INFLIGHT, READY, BrokerStore, Subscriber
from .registry import parse_memory_url, store_for

BROKER_OPTIONS: dict[str, type] = {"lease_seconds": float}


class MemoryBroker(Broker):
    """In-process broker over a store shared by every broker on the same ``memory://NAME``."""

    scheme: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True,
        priority=True,
        broadcast=True,
        dead_letters=True,
        lease_extension=True,
        peek=True,
        durable=False,
        cross_process=False,
    )

    def __init__(self, store: BrokerStore, *, name: str = "default", namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self.name = name
        self._store = store
        self._closed = False
        self._subscribers: set[Subscriber] = set()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "MemoryBroker":
        name, opts = parse_memory_url(url, options, BROKER_OPTIONS)
        lease = opts.get("lease_seconds", DEFAULT_LEASE_SECONDS)
        if isinstance(lease, bool) or not isinstance(lease, (int, float)):
            raise ConfigurationError(f"lease_seconds must be a number of seconds, got {lease!r}")
        store = store_for("broker", name, namespace, BrokerStore)
        return cls(store, name=name, namespace=namespace, lease_seconds=float(lease))

    async def connect(self) -> "MemoryBroker":
        self._closed = False
        return self

    async def close(self) -> None:
        self._closed = True
        # Waiting consumers wake, find the broker closed and raise BrokerUnavailable.
        for sub in list(self._subscribers):
            sub.notify()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable(f"memory://{self.name} broker is closed")

    def _wake(self, subs: list[Subscriber]) -> None:
        for sub in subs:
            sub.notify()

    # -- producing ------------------------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        self._check_open()
        store = self._store
        with store.lock:
            touched = store.publish(envelopes)
            subs = store.wake_queues(touched)
        self._wake(subs)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        self._check_open()
        with self._store.lock:
            subs = self._store.broadcast(channel, envelope)
        self._wake(subs)

    # -- consuming ------------------------------------------------------------------

    async def _open_subscription(self, sub: Subscription) -> None:
        self._check_open()
        state = Subscriber(sub.queues, sub.channels, sub.consumer)
        sub.state = state
        with self._store.lock:
            self._store.subscribe(state)
        self._subscribers.add(state)

    async def _close_subscription(self, sub: Subscription) -> None:
        state: Subscriber | None = sub.state
        if state is None:
            return
        with self._store.lock:
            self._store.unsubscribe(state)
        self._subscribers.discard(state)

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: Subscriber = sub.state
        store = self._store
        deadline = monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            self._check_open()
            with store.lock:
                out = [
                    Delivery(envelope=env, receipt=f"b:{next(_broadcast_ids)}", queue=channel, channel=channel)
                    for channel, env in _drain(state)
                ]
                if limit > 0 and sub.queues:
                    out.extend(
                        Delivery(
                            envelope=msg.envelope,
                            receipt=receipt,
                            queue=msg.queue,
                            lease_expires_at=msg.lease_expires_at,
                            delivery_count=msg.delivery_count,
                        )
                        for msg, receipt in store.claim(state, limit, self.lease_for)
                    )
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

    async def _unclaim(self, deliveries: list[Delivery]) -> None:
        self._check_open()
        with self._store.lock:
            subs = self._store.wake_queues(self._store.unclaim([d.receipt for d in deliveries]))
        self._wake(subs)

    def _settle(self, delivery: Delivery) -> bool:
        """True for a queue delivery (a broadcast copy needs no settling)."""
        self._check_open()
        return delivery.channel is None

    async def _ack(self, delivery: Delivery) -> None:
        if self._settle(delivery):
            with self._store.lock:
                self._store.ack(delivery.receipt)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        if not self._settle(delivery):
            return
        with self._store.lock:
            queue = self._store.nack(delivery.receipt, self.requeued_envelope(delivery.envelope, delay) if requeue else None)
            subs = self._store.wake_queues({queue}) if queue else []
        self._wake(subs)

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        self._check_open()
        with self._store.lock:
            deadline = self._store.extend(delivery.receipt, seconds)
        if deadline is None:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        return deadline

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        if self._settle(delivery):
            with self._store.lock:
                self._store.dead_letter(delivery.receipt, reason, meta)

    # -- inspecting and repairing ---------------------------------------------------

    async def list_queues(self) -> list[str]:
        self._check_open()
        with self._store.lock:
            return sorted(name for name, q in self._store.queues.items() if q.live or q.dead)

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        self._check_open()
        store = self._store
        out = []
        with store.lock:
            now = to_epoch(utcnow())
            for name in queues:
                q = store.known(name)
                if q is None:
                    out.append(QueueStats(name, 0, 0, 0, 0, None, 0, 0))
                    continue
                top = store.oldest_ready(q)
                out.append(
                    QueueStats(
                        queue=name,
                        pending=q.counts[READY],
                        delayed=q.counts[DELAYED],
                        inflight=q.counts[INFLIGHT],
                        dead=len(q.dead),
                        oldest_pending_age=None if top is None else max(0.0, now - top),
                        enqueued_total=q.enqueued_total,
                        completed_total=q.completed_total,
                    )
                )
        return out

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        self._check_open()
        with self._store.lock:
            return self._store.peek(queue, state, limit, offset)

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        self._check_open()
        with self._store.lock:
            count = self._store.requeue(queue, ids)
            subs = self._store.wake_queues({queue}) if count else []
        self._wake(subs)
        return count

    async def _remove(self, queue: str, ids: set[str]) -> int:
        self._check_open()
        with self._store.lock:
            return self._store.remove(queue, ids)

    async def _purge(self, queue: str) -> int:
        self._check_open()
        with self._store.lock:
            return self._store.purge(queue)

    # -- dead letters ---------------------------------------------------------------

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        self._check_open()
        with self._store.lock:
            q = self._store.queues.get(queue)
            if q is None:
                return DeadLetterPage(entries=[], next_offset=None)
            total = len(q.dead)
            entries = list(itertools.islice(reversed(q.dead.values()), offset, offset + limit))
        end = offset + len(entries)
        return DeadLetterPage(entries=entries, next_offset=end if end < total and limit > 0 else None)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        self._check_open()
        with self._store.lock:
            q = self._store.queues.get(queue)
            return q.dead.get(id) if q is not None else None

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        self._check_open()
        store = self._store
        subs: list[Subscriber] = []
        with store.lock:
            q = store.queues.get(queue)
            if q is None or limit == 0:
                return ReplayResult(entries=[], dry_run=dry_run)
            picked = list(itertools.islice((e for e in q.dead.values() if self.matches_replay(e, since, ids, task)), limit))
            if not dry_run and picked:
                now = utcnow()
                for entry in picked:
                    del q.dead[entry.envelope.id]
                replayed = [self.replayed_envelope(e.envelope, delay, now=now).replace(queue=queue) for e in picked]
                store.publish(replayed)
                subs = store.wake_queues({queue})
        self._wake(subs)
        return ReplayResult(entries=picked, dry_run=dry_run)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        self._check_open()
        with self._store.lock:
            q = self._store.queues.get(queue)
            if q is None:
                return 0
            doomed = [e.envelope.id for e in q.dead.values() if since is None or e.dead_at >= since]
            if limit is not None:
                doomed = doomed[:limit]
            for id_ in doomed:
                del q.dead[id_]
            return len(doomed)


_broadcast_ids = itertools.count(1)


def _drain(state: Subscriber) -> list[tuple[str, Envelope]]:
    items = list(state.inbox)
    state.inbox.clear()
    return items


__all__ = ["MemoryBroker"]
