"""``MemoryInspector``: what an operator sees and repairs - queue names, counters, pages of
messages by state, and requeue / remove / purge by id.

Counters are kept by the store on every state change, so ``queue_stats`` is O(1) per queue.
Every action first moves the queue's due delayed messages and expired leases to ready
(``MemoryStore.known``), so what it sees and changes is what a consumer would claim.

``page`` pages by keyset cursor: the key of a heap entry (its fields before the token)
is the order that state is served in, so the next page is the ``limit`` smallest live
entries whose key is past the cursor's - never the ``offset + limit`` smallest.
"""

from __future__ import annotations

import heapq

from ...clock import to_epoch, utcnow
from ...contract.broker import Broker
from ...contract.cursor import decode_key, encode_key
from ...contract.types import MessageInfo, MessagePage, QueueStats
from ...settings import REPLY_QUEUE_PREFIX
from .connection import MemoryConnection
from .store import DELAYED, INFLIGHT, READY, live_entries, wake


# The types of a heap entry's key fields, per state (``store.py``: ready, delayed, leases).
_KEY_KINDS: dict[str, tuple[type, ...]] = {READY: (int, float, int), DELAYED: (float, int), INFLIGHT: (float, int)}


class MemoryInspector:
    """``list_queues``, ``queue_stats``, ``peek``, ``requeue``, ``remove`` and ``purge``."""

    def __init__(self, connection: MemoryConnection) -> None:
        self._connection = connection
        self._store = connection.store

    async def list_queues(self) -> list[str]:
        self._connection.check_open()
        with self._store.lock:
            return sorted(name for name, q in self._store.queues.items() if q.live or q.dead)

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        self._connection.check_open()
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

    async def peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        """Messages in ``state``, in the order that state is served (delivery order, due
        time, lease expiry)."""
        self._connection.check_open()
        with self._store.lock:
            q = self._store.known(queue)
            if q is None:
                return []
            page = heapq.nsmallest(offset + limit, live_entries(q.heap(state), state))[offset:]
            return [e[-1].info() for e in page]

    async def page(self, queue: str, state: str, limit: int, cursor: str | None) -> MessagePage:
        """``limit`` messages in ``state`` after the entry ``cursor`` names (None: from the
        first), and the cursor of the next page (None when nothing follows)."""
        kinds = _KEY_KINDS[state]
        after = decode_key(cursor, state, kinds) if cursor is not None else None
        self._connection.check_open()
        if limit == 0:
            return MessagePage(messages=[], next_cursor=cursor)
        width = len(kinds)
        with self._store.lock:
            q = self._store.known(queue)
            if q is None:
                return MessagePage(messages=[], next_cursor=None)
            entries = live_entries(q.heap(state), state)
            if after is not None:
                entries = [e for e in entries if e[:width] > after]
            page = heapq.nsmallest(limit + 1, entries)
            more = len(page) > limit
            page = page[:limit]
            return MessagePage(
                messages=[e[-1].info() for e in page],
                next_cursor=encode_key(state, page[-1][:width]) if more else None,
            )

    async def requeue(self, queue: str, ids: set[str]) -> int:
        """Leased or delayed messages become ready now; a leased one's holder is fenced off."""
        self._connection.check_open()
        store = self._store
        changed = 0
        with store.lock:
            q = store.known(queue)
            if q is None:
                return 0
            for msg in store.matching(q, ids):
                if msg.state == INFLIGHT:
                    store.fence(msg)
                    msg.lease_expires_at = None
                elif msg.state == DELAYED:
                    # Ready from now: its age (and its place among equals) starts now.
                    msg.envelope = Broker.ready_now_envelope(msg.envelope, utcnow())
                else:
                    continue
                store.move(q, msg, READY)
                changed += 1
            waiting = store.waiting_on({queue}) if changed else []
        wake(waiting)
        return changed

    async def remove(self, queue: str, ids: set[str]) -> int:
        self._connection.check_open()
        store = self._store
        with store.lock:
            q = store.known(queue)
            if q is None:
                return 0
            found = store.matching(q, ids)
            for msg in found:
                store.delete(q, msg)
            return len(found)

    async def purge(self, queue: str) -> int:
        """Delete the ready and delayed messages (leased ones finish or expire first)."""
        self._connection.check_open()
        store = self._store
        with store.lock:
            q = store.known(queue)
            if q is None:
                return 0
            doomed = [e[-1] for state in (READY, DELAYED) for e in live_entries(q.heap(state), state)]
            for msg in doomed:
                store.delete(q, msg)
            if queue.startswith(REPLY_QUEUE_PREFIX) and not q.live and not q.dead:
                del store.queues[queue]  # a control reply queue is used once: nothing of it stays
            return len(doomed)


__all__ = ["MemoryInspector"]
