"""``MemoryStore``: what a server would hold, for one ``(memory://NAME, namespace)``.

Every queue, message, dead letter and subscription lives here, shared by every
``MemoryBroker`` opened on the same NAME and namespace in this process (``registry.py``).
The store keeps the data and the transitions that keep its indexes and counters true; the
broker's parts (``publish.py``, ``consume.py``, ``channels.py``, ``inspect.py``,
``dead.py``) build the contract's primitives from them, as a server adapter's parts would
from the server's commands.

Every method runs under ``lock`` and never awaits. The lock is reentrant: a part holds it
around several steps that must be one atomic change, so a claim and the lease it sets
are one step (a cancelled consumer can never lose a message between them).

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
from typing import Any, Callable, Iterable

from ...clock import monotonic, to_epoch, utcnow
from ...contract.types import DeadLetterEntry, MessageInfo
from ...envelope import Envelope
from ...settings import PRUNE_BATCH

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

Entry = tuple[Any, ...]


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
    ready: list[Entry] = field(default_factory=list)
    by_age: list[Entry] = field(default_factory=list)
    delayed: list[Entry] = field(default_factory=list)
    leases: list[Entry] = field(default_factory=list)
    by_id: dict[str, list[Message]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {READY: 0, DELAYED: 0, INFLIGHT: 0})
    dead: dict[str, DeadLetterEntry] = field(default_factory=dict)
    enqueued_total: int = 0
    completed_total: int = 0

    @property
    def live(self) -> int:
        return self.counts[READY] + self.counts[DELAYED] + self.counts[INFLIGHT]

    def heap(self, state: str) -> list[Entry]:
        """The heap that orders the messages in ``state``."""
        return {READY: self.ready, DELAYED: self.delayed, INFLIGHT: self.leases}[state]


class MemorySubscription:
    """One ``consume`` call as the store sees it: its queues, channels, broadcast inbox and
    the waker of the consumer currently waiting on it (if any)."""

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


def wake(subscriptions: Iterable[MemorySubscription]) -> None:
    """Wake the consumers waiting on ``subscriptions``; called after the lock is released
    (a waker resolves a future thread-safely, which need not happen under the lock)."""
    for sub in subscriptions:
        sub.notify()


def heap_top(heap: list[Entry], state: str) -> Entry | None:
    """The first live entry (stale ones are popped on the way)."""
    while heap:
        entry = heap[0]
        msg: Message = entry[-1]
        if msg.token == entry[-2] and msg.state == state:
            return entry
        heapq.heappop(heap)
    return None


def live_entries(heap: list[Entry], state: str) -> list[Entry]:
    """The heap's live entries, unordered."""
    return [e for e in heap if e[-1].token == e[-2] and e[-1].state == state]


def _compact(heap: list[Entry], live: int, state: str) -> None:
    if len(heap) > 2 * live + HEAP_SLACK_ENTRIES:
        heap[:] = live_entries(heap, state)
        heapq.heapify(heap)


class MemoryStore:
    """All queues, dead letters and subscriptions of one ``(memory://NAME, namespace)``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.queues: dict[str, QueueState] = {}
        self.receipts: dict[str, Message] = {}
        self.by_queue: dict[str, set[MemorySubscription]] = {}
        self.by_channel: dict[str, set[MemorySubscription]] = {}
        self._seq = itertools.count(1)
        self._receipt_seq = itertools.count(1)

    # -- queues and messages --------------------------------------------------------

    def queue(self, name: str) -> QueueState:
        state = self.queues.get(name)
        if state is None:
            state = self.queues[name] = QueueState(name)
        return state

    def known(self, name: str) -> QueueState | None:
        """The queue, with due delayed messages and expired leases moved to ready (so what
        an operator sees is what a consumer would claim); None if it never existed."""
        q = self.queues.get(name)
        if q is not None:
            self.tick(q, monotonic())
        return q

    def publish(self, envelopes: list[Envelope]) -> set[str]:
        """Add the envelopes (ready or delayed); returns the queues they went to."""
        now = monotonic()
        touched: set[str] = set()
        for env in envelopes:
            q = self.queue(env.queue)
            msg = Message(env, next(self._seq))
            q.by_id.setdefault(env.id, []).append(msg)
            q.enqueued_total += 1
            self.place(q, msg, now)
            touched.add(env.queue)
        return touched

    def move(self, q: QueueState, msg: Message, state: str) -> None:
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

    def place(self, q: QueueState, msg: Message, now: float) -> None:
        """Ready or delayed, by the envelope's ``not_before``."""
        nb = msg.envelope.not_before
        wait = (nb - utcnow()).total_seconds() if nb is not None else 0.0
        if wait > 0:
            msg.due = now + wait + DUE_SLACK_S
            self.move(q, msg, DELAYED)
        else:
            self.move(q, msg, READY)

    def lease(self, q: QueueState, msg: Message, holder: str, seconds: float, now: float) -> str:
        """Lease a ready ``msg`` to ``holder`` for ``seconds``; returns its new receipt
        (any older receipt is fenced off)."""
        self.fence(msg)
        receipt = f"{next(self._receipt_seq)}:{msg.envelope.id}"
        msg.receipt, msg.holder = receipt, holder
        msg.delivery_count += 1
        msg.lease_deadline = now + seconds
        msg.lease_expires_at = utcnow() + timedelta(seconds=seconds)
        self.receipts[receipt] = msg
        self.move(q, msg, INFLIGHT)
        return receipt

    def fence(self, msg: Message) -> None:
        """Invalidate the message's current receipt (its holder's settles become no-ops)."""
        if msg.receipt is not None:
            self.receipts.pop(msg.receipt, None)
            msg.receipt = None
            msg.holder = None

    def delete(self, q: QueueState, msg: Message) -> None:
        self.fence(msg)
        self.move(q, msg, "")
        same = q.by_id.get(msg.envelope.id)
        if same is not None:
            same.remove(msg)
            if not same:
                del q.by_id[msg.envelope.id]

    def matching(self, q: QueueState, ids: set[str]) -> list[Message]:
        return [m for i in ids for m in q.by_id.get(i, ())]

    def tick(self, q: QueueState, now: float) -> None:
        """Promote due delayed messages and take back expired leases (keeping the old
        receipt valid until the message is handed to someone else)."""
        while (entry := heap_top(q.delayed, DELAYED)) is not None and entry[0] <= now:
            self.move(q, entry[-1], READY)
        while (entry := heap_top(q.leases, INFLIGHT)) is not None and entry[0] <= now:
            msg: Message = entry[-1]
            msg.lease_expires_at = None
            self.move(q, msg, READY)

    def next_deadline(self, queues: tuple[str, ...]) -> float | None:
        """The earliest monotonic time a delayed message or a lease of ``queues`` is due."""
        best: float | None = None
        for name in queues:
            q = self.queues.get(name)
            if q is None:
                continue
            for heap, state in ((q.delayed, DELAYED), (q.leases, INFLIGHT)):
                entry = heap_top(heap, state)
                if entry is not None and (best is None or entry[0] < best):
                    best = entry[0]
        return best

    @staticmethod
    def oldest_ready(q: QueueState) -> float | None:
        """POSIX time the oldest ready message became ready, or None."""
        entry = heap_top(q.by_age, READY)
        return entry[0] if entry is not None else None

    @staticmethod
    def bury(q: QueueState, entry: DeadLetterEntry, retention: float) -> None:
        """Keep ``entry``, and delete at most ``PRUNE_BATCH`` of the oldest dead letters
        older than ``retention`` seconds (``q.dead`` is in dead-letter order)."""
        # One entry per envelope id: dead-lettering the same id again replaces (and renews) it.
        q.dead.pop(entry.envelope.id, None)
        q.dead[entry.envelope.id] = entry
        cutoff = entry.dead_at - timedelta(seconds=retention)
        old = [id_ for id_, e in itertools.islice(q.dead.items(), PRUNE_BATCH) if e.dead_at < cutoff]
        for id_ in old:
            del q.dead[id_]

    # -- subscriptions --------------------------------------------------------------

    def subscribe(self, sub: MemorySubscription) -> None:
        for name in sub.queues:
            self.by_queue.setdefault(name, set()).add(sub)
        for name in sub.channels:
            self.by_channel.setdefault(name, set()).add(sub)

    def unsubscribe(self, sub: MemorySubscription) -> None:
        for index, names in ((self.by_queue, sub.queues), (self.by_channel, sub.channels)):
            for name in names:
                group = index.get(name)
                if group is not None:
                    group.discard(sub)
                    if not group:
                        del index[name]

    def waiting_on(self, queues: Iterable[str]) -> list[MemorySubscription]:
        """The subscriptions to wake after ``queues`` got ready messages."""
        return [sub for name in queues for sub in self.by_queue.get(name, ())]

    def listening(self, channel: str) -> list[MemorySubscription]:
        """The subscriptions a broadcast on ``channel`` goes to."""
        return list(self.by_channel.get(channel, ()))


__all__ = [
    "DELAYED", "INFLIGHT", "MemoryStore", "MemorySubscription", "Message", "QueueState", "READY",
    "heap_top", "live_entries", "wake",
]
