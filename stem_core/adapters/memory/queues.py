"""The in-memory queue store: plain synchronous state, shared by every ``MemoryBroker``
opened on the same ``memory://NAME`` and namespace.

Every method runs under the store's lock and never awaits, so a claim and the lease it
sets are one atomic step (a cancelled consumer can never lose a message between them).

Per queue the store keeps lazy-deletion heaps, so no operation scans a whole queue:

* ``ready``   ``(-priority, ready_at, seq, token, msg)``: delivery order (higher priority,
  then oldest by ``max(enqueued_at, not_before)``, then publish order);
* ``by_age``  ``(ready_at, seq, token, msg)``: the oldest ready message, for
  ``oldest_pending_age``;
* ``delayed`` ``(due, seq, token, msg)`` on the monotonic clock;
* ``leases``  ``(expires, seq, token, msg)`` on the monotonic clock.

A heap entry is live only while ``msg.token`` still equals the entry's token: every
state change bumps the token, so stale entries are skipped when they reach the top and
dropped in bulk when a heap grows past twice its live size.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from ...clock import monotonic, to_epoch, utcnow
from ...contract.types import DeadLetterEntry, MessageInfo
from ...envelope import Envelope

READY = "pending"
DELAYED = "delayed"
INFLIGHT = "inflight"
# A stale heap is rebuilt once it holds this many more entries than live messages.
HEAP_SLACK_ENTRIES = 1024
# Delayed messages become ready this long after their monotonic due time, so that a
# delivery is never observed (on the wall clock) a hair before its ``not_before``.
DUE_SLACK_S = 0.001
# A subscriber that stops reading keeps at most this many broadcast copies (oldest dropped).
BROADCAST_BACKLOG_LIMIT = 10_000


class Message:
    """One live message; ``token`` changes on every state change (heap entries fence on it)."""

    __slots__ = ("envelope", "queue", "seq", "state", "token", "receipt", "holder", "delivery_count",
                 "due", "lease_deadline", "lease_expires_at")

    def __init__(self, envelope: Envelope, seq: int) -> None:
        self.envelope = envelope
        self.queue = envelope.queue
        self.seq = seq
        self.state = ""
        self.token = 0
        self.receipt: str | None = None
        self.holder: str | None = None
        self.delivery_count = 0
        self.due = 0.0
        self.lease_deadline = 0.0
        self.lease_expires_at: datetime | None = None

    def info(self) -> MessageInfo:
        inflight = self.state == INFLIGHT
        return MessageInfo(
            envelope=self.envelope,
            state=self.state,
            lease_holder=self.holder if inflight else None,
            lease_expires_at=self.lease_expires_at if inflight else None,
            delivery_count=self.delivery_count,
        )


@dataclass
class QueueState:
    """One queue: heaps, counters and dead letters. Kept once created, so the
    ``*_total`` counters never go backwards (``list_queues`` skips empty ones)."""

    name: str
    ready: list[tuple[Any, ...]] = field(default_factory=list)
    by_age: list[tuple[Any, ...]] = field(default_factory=list)
    delayed: list[tuple[Any, ...]] = field(default_factory=list)
    leases: list[tuple[Any, ...]] = field(default_factory=list)
    by_id: dict[str, list[Message]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {READY: 0, DELAYED: 0, INFLIGHT: 0})
    dead: dict[str, DeadLetterEntry] = field(default_factory=dict)
    enqueued_total: int = 0
    completed_total: int = 0

    @property
    def live(self) -> int:
        return self.counts[READY] + self.counts[DELAYED] + self.counts[INFLIGHT]


class Subscriber:
    """A ``consume`` subscription as the store sees it: its queues, channels, broadcast
    inbox and the waker of the consumer currently waiting (if any)."""

    __slots__ = ("queues", "channels", "consumer", "inbox", "wake")

    def __init__(self, queues: tuple[str, ...], channels: tuple[str, ...], consumer: str) -> None:
        self.queues = queues
        self.channels = channels
        self.consumer = consumer
        self.inbox: deque[tuple[str, Envelope]] = deque(maxlen=BROADCAST_BACKLOG_LIMIT)
        self.wake: Callable[[], None] | None = None

    def notify(self) -> None:
        if self.wake is not None:
            self.wake()


def _heap_top(heap: list[tuple[Any, ...]], state: str) -> tuple[Any, ...] | None:
    """The first live entry (stale ones are popped on the way)."""
    while heap:
        entry = heap[0]
        msg: Message = entry[-1]
        if msg.token == entry[-2] and msg.state == state:
            return entry
        heapq.heappop(heap)
    return None


def _compact(heap: list[tuple[Any, ...]], live: int, state: str) -> None:
    if len(heap) > 2 * live + HEAP_SLACK_ENTRIES:
        heap[:] = [e for e in heap if e[-1].token == e[-2] and e[-1].state == state]
        heapq.heapify(heap)


class BrokerStore:
    """All queues, dead letters and subscribers of one ``(memory://NAME, namespace)``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.queues: dict[str, QueueState] = {}
        self.receipts: dict[str, Message] = {}
        self.by_queue: dict[str, set[Subscriber]] = {}
        self.by_channel: dict[str, set[Subscriber]] = {}
        self._seq = itertools.count(1)
        self._receipt_seq = itertools.count(1)

    # -- state transitions ----------------------------------------------------------

    def queue(self, name: str) -> QueueState:
        state = self.queues.get(name)
        if state is None:
            state = self.queues[name] = QueueState(name)
        return state

    def _move(self, q: QueueState, msg: Message, state: str) -> None:
        """Put ``msg`` in ``state`` (or remove it when ``state`` is empty), keeping counters."""
        if msg.state:
            q.counts[msg.state] -= 1
        msg.token += 1
        msg.state = state
        if not state:
            return
        q.counts[state] += 1
        if state == READY:
            ready_at = to_epoch(msg.envelope.ready_at)
            heapq.heappush(q.ready, (-msg.envelope.priority, ready_at, msg.seq, msg.token, msg))
            heapq.heappush(q.by_age, (ready_at, msg.seq, msg.token, msg))
            _compact(q.ready, q.counts[READY], READY)
            _compact(q.by_age, q.counts[READY], READY)
        elif state == DELAYED:
            heapq.heappush(q.delayed, (msg.due, msg.seq, msg.token, msg))
            _compact(q.delayed, q.counts[DELAYED], DELAYED)
        else:
            heapq.heappush(q.leases, (msg.lease_deadline, msg.seq, msg.token, msg))
            _compact(q.leases, q.counts[INFLIGHT], INFLIGHT)

    def _place(self, q: QueueState, msg: Message, now: float) -> None:
        """Ready or delayed, by the envelope's ``not_before``."""
        nb = msg.envelope.not_before
        wait = (nb - utcnow()).total_seconds() if nb is not None else 0.0
        if wait > 0:
            msg.due = now + wait + DUE_SLACK_S
            self._move(q, msg, DELAYED)
        else:
            self._move(q, msg, READY)

    def _fence(self, msg: Message) -> None:
        """Invalidate the message's current receipt (its holder's settles become no-ops)."""
        if msg.receipt is not None:
            self.receipts.pop(msg.receipt, None)
            msg.receipt = None
            msg.holder = None

    def _delete(self, q: QueueState, msg: Message) -> None:
        self._fence(msg)
        self._move(q, msg, "")
        same = q.by_id.get(msg.envelope.id)
        if same is not None:
            same.remove(msg)
            if not same:
                del q.by_id[msg.envelope.id]

    def tick(self, q: QueueState, now: float) -> None:
        """Promote due delayed messages and take back expired leases (keeping the old
        receipt valid until the message is handed to someone else)."""
        while (entry := _heap_top(q.delayed, DELAYED)) is not None and entry[0] <= now:
            self._move(q, entry[-1], READY)
        while (entry := _heap_top(q.leases, INFLIGHT)) is not None and entry[0] <= now:
            msg: Message = entry[-1]
            msg.lease_expires_at = None
            self._move(q, msg, READY)

    def next_deadline(self, queues: tuple[str, ...]) -> float | None:
        """The earliest monotonic time a delayed message or a lease of ``queues`` is due."""
        best: float | None = None
        for name in queues:
            q = self.queues.get(name)
            if q is None:
                continue
            for heap, state in ((q.delayed, DELAYED), (q.leases, INFLIGHT)):
                entry = _heap_top(heap, state)
                if entry is not None and (best is None or entry[0] < best):
                    best = entry[0]
        return best

    # -- producing ------------------------------------------------------------------

    def publish(self, envelopes: list[Envelope]) -> set[str]:
        now = monotonic()
        touched: set[str] = set()
        for env in envelopes:
            q = self.queue(env.queue)
            msg = Message(env, next(self._seq))
            q.by_id.setdefault(env.id, []).append(msg)
            q.enqueued_total += 1
            self._place(q, msg, now)
            touched.add(env.queue)
        return touched

    def broadcast(self, channel: str, envelope: Envelope) -> list[Subscriber]:
        subs = list(self.by_channel.get(channel, ()))
        for sub in subs:
            sub.inbox.append((channel, envelope))
        return subs

    def wake_queues(self, queues: set[str]) -> list[Subscriber]:
        return [sub for name in queues for sub in self.by_queue.get(name, ())]

    # -- consuming ------------------------------------------------------------------

    def subscribe(self, sub: Subscriber) -> None:
        for name in sub.queues:
            self.by_queue.setdefault(name, set()).add(sub)
        for name in sub.channels:
            self.by_channel.setdefault(name, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        for index, names in ((self.by_queue, sub.queues), (self.by_channel, sub.channels)):
            for name in names:
                group = index.get(name)
                if group is not None:
                    group.discard(sub)
                    if not group:
                        del index[name]

    def claim(self, sub: Subscriber, limit: int, lease_for: Callable[[Envelope], float]) -> list[tuple[Message, str]]:
        """Lease up to ``limit`` ready messages across the subscriber's queues, best first."""
        now = monotonic()
        states = [q for name in sub.queues if (q := self.queues.get(name)) is not None]
        for q in states:
            self.tick(q, now)
        out: list[tuple[Message, str]] = []
        while len(out) < limit:
            best: tuple[Any, ...] | None = None
            best_q: QueueState | None = None
            for q in states:
                entry = _heap_top(q.ready, READY)
                if entry is not None and (best is None or entry[:3] < best[:3]):
                    best, best_q = entry, q
            if best is None or best_q is None:
                break
            msg: Message = best[-1]
            self._fence(msg)
            receipt = f"{next(self._receipt_seq)}:{msg.envelope.id}"
            seconds = lease_for(msg.envelope)
            msg.receipt, msg.holder = receipt, sub.consumer
            msg.delivery_count += 1
            msg.lease_deadline = now + seconds
            msg.lease_expires_at = utcnow() + timedelta(seconds=seconds)
            self.receipts[receipt] = msg
            self._move(best_q, msg, INFLIGHT)
            out.append((msg, receipt))
        return out

    def unclaim(self, receipts: list[str]) -> set[str]:
        """Give back claims whose deliveries never reached the consumer, as if never
        claimed (ready now, delivery not counted); returns the queues to wake."""
        touched: set[str] = set()
        for receipt in receipts:
            msg = self.receipts.get(receipt)
            if msg is None or msg.state != INFLIGHT:
                continue
            self._fence(msg)
            msg.delivery_count = max(msg.delivery_count - 1, 0)
            msg.lease_expires_at = None
            self._move(self.queue(msg.queue), msg, READY)
            touched.add(msg.queue)
        return touched

    def ack(self, receipt: str) -> None:
        msg = self.receipts.get(receipt)
        if msg is not None:
            q = self.queue(msg.queue)
            q.completed_total += 1
            self._delete(q, msg)

    def nack(self, receipt: str, requeued: Envelope | None) -> str | None:
        """Give back as ``requeued`` (the attempt + 1 copy) or drop (None); returns the queue to wake."""
        msg = self.receipts.get(receipt)
        if msg is None:
            return None
        q = self.queue(msg.queue)
        if requeued is None:
            self._delete(q, msg)
            return None
        self._fence(msg)
        msg.envelope = requeued
        msg.lease_expires_at = None
        self._place(q, msg, monotonic())
        return q.name

    def extend(self, receipt: str, seconds: float) -> datetime | None:
        """Move the lease to now + ``seconds``; None when the receipt is stale. A lease that
        expired but was not yet handed to anyone else is taken back by its holder."""
        msg = self.receipts.get(receipt)
        if msg is None:
            return None
        msg.lease_deadline = monotonic() + seconds
        msg.lease_expires_at = utcnow() + timedelta(seconds=seconds)
        self._move(self.queue(msg.queue), msg, INFLIGHT)
        return msg.lease_expires_at

    def dead_letter(self, receipt: str, reason: str, meta: dict[str, Any]) -> None:
        msg = self.receipts.get(receipt)
        if msg is None:
            return
        q = self.queue(msg.queue)
        self.add_dead(q, DeadLetterEntry(envelope=msg.envelope, reason=reason, meta=meta, dead_at=utcnow()))
        self._delete(q, msg)

    # -- dead letters ---------------------------------------------------------------

    @staticmethod
    def add_dead(q: QueueState, entry: DeadLetterEntry) -> None:
        # One entry per envelope id: dead-lettering the same id again replaces (and renews) it.
        q.dead.pop(entry.envelope.id, None)
        q.dead[entry.envelope.id] = entry

    # -- inspecting and repairing ---------------------------------------------------

    def known(self, name: str) -> QueueState | None:
        q = self.queues.get(name)
        if q is not None:
            self.tick(q, monotonic())
        return q

    @staticmethod
    def oldest_ready(q: QueueState) -> float | None:
        """POSIX time the oldest ready message became ready, or None."""
        entry = _heap_top(q.by_age, READY)
        return entry[0] if entry is not None else None

    def peek(self, name: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        q = self.known(name)
        if q is None:
            return []
        heap = {READY: q.ready, DELAYED: q.delayed, INFLIGHT: q.leases}[state]
        live = [e for e in heap if e[-1].token == e[-2] and e[-1].state == state]
        page = heapq.nsmallest(offset + limit, live)[offset:]
        return [e[-1].info() for e in page]

    def _matching(self, q: QueueState, ids: set[str]) -> list[Message]:
        return [m for i in ids for m in q.by_id.get(i, ())]

    def requeue(self, name: str, ids: set[str]) -> int:
        q = self.known(name)
        if q is None:
            return 0
        changed = 0
        for msg in self._matching(q, ids):
            if msg.state == INFLIGHT:
                self._fence(msg)
                msg.lease_expires_at = None
            elif msg.state == DELAYED:
                # Ready from now: its age (and its place among equals) starts now.
                msg.envelope = msg.envelope.replace(not_before=utcnow())
            else:
                continue
            self._move(q, msg, READY)
            changed += 1
        return changed

    def remove(self, name: str, ids: set[str]) -> int:
        q = self.known(name)
        if q is None:
            return 0
        found = self._matching(q, ids)
        for msg in found:
            self._delete(q, msg)
        return len(found)

    def purge(self, name: str) -> int:
        q = self.known(name)
        if q is None:
            return 0
        doomed = [e[-1] for heap, st in ((q.ready, READY), (q.delayed, DELAYED)) for e in heap
                  if e[-1].token == e[-2] and e[-1].state == st]
        for msg in doomed:
            self._delete(q, msg)
        return len(doomed)


__all__ = ["BrokerStore", "DELAYED", "INFLIGHT", "Message", "QueueState", "READY", "Subscriber"]
