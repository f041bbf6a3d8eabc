"""``RedisInspector``: what operators read and repair in queues: the queue list, stats,
peek, requeue, remove and purge.

``queue_stats`` reads ``XLEN``/``XPENDING``/``ZCARD``/``ZCOUNT`` and one entry per band,
so it costs the same for 10 messages and for a million. Delayed and leased copies are
indexed by envelope id (requeue/remove are O(1)); undelivered entries are not, so
``remove`` walks the undelivered part of each band in bounded chunks. Long operations
(remove's walk, purge) run as repeated bounded scripts so Redis never blocks for long.
"""

from __future__ import annotations

import re
from typing import Any

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import MessageInfo, MessagePage, QueueStats
from ...settings import REPLY_QUEUE_PREFIX
from .codec import decode, text
from .connection import RedisConnection
from .keys import BANDS, KeyCache, from_us, to_us

# Messages one repair script deletes at most per call.
REPAIR_BATCH = 1000
# Due delayed messages a peek considers (as a claim would).
PEEK_DUE_SCAN = 256
# An offset is skipped by cursor pages of at most this many entries (one script each).
PEEK_SKIP_CHUNK = 500
# What peek.lua's cursors look like (anything else is refused before it reaches Lua).
_CURSOR_RE = {
    "pending": re.compile(r"[0-9]\|[0-9]{1,9}\|(?:[0-9]{1,20}-[0-9]{1,20})?"),
    "delayed": re.compile(r"[0-9]{1,20}\|[0-9]:[\x21-\x7e]{1,300}"),
    "inflight": re.compile(r"[0-9]{1,20}\|[0-9][sp]:[0-9]{1,20}-[0-9]{1,20}"),
}


class RedisInspector:
    """Operator reads and repairs of one namespace's queues."""

    def __init__(self, conn: RedisConnection, keys: KeyCache, registry: str) -> None:
        self._conn = conn
        self._keys = keys
        self._registry = registry

    async def list_queues(self) -> list[str]:
        client = self._conn.client
        with self._conn.guard:
            names = sorted(text(n) for n in await client.smembers(self._registry))
            if not names:
                return []
            script = self._conn.script("live")
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    await script(keys=self._keys(name), args=[], client=pipe)
                flags = await pipe.execute()
            # Reply queues registered by older versions: forgotten once they are empty.
            stale = [name for name, live in zip(names, flags) if not live and name.startswith(REPLY_QUEUE_PREFIX)]
            if stale:
                await client.srem(self._registry, *stale)
        return [name for name, live in zip(names, flags) if live]

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        client = self._conn.client
        with self._conn.guard:
            script = self._conn.script("stats")
            async with client.pipeline(transaction=False) as pipe:
                for name in queues:
                    await script(keys=self._keys(name), args=[], client=pipe)
                replies = await pipe.execute()
        out = []
        for name, (pending, delayed, inflight, dead, oldest, now, enq, done) in zip(queues, replies):
            age = None if oldest < 0 else max(0.0, (now - oldest) / 1e6)
            out.append(QueueStats(queue=name, pending=pending, delayed=delayed, inflight=inflight, dead=dead,
                                  oldest_pending_age=age, enqueued_total=enq, completed_total=done))
        return out

    async def peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        """A page at ``offset``: the offset is walked by cursor, ``PEEK_SKIP_CHUNK`` entries
        per script call, so no single call does more than a page's work."""
        if limit == 0:
            return []
        cursor = ""
        while offset > 0:
            step = min(offset, PEEK_SKIP_CHUNK)
            cursor, _read, _rows = await self.walk(queue, state, step, cursor, emit=False)
            offset -= step
            if not cursor:
                return []
        return (await self.page(queue, state, limit, cursor)).messages

    async def page(self, queue: str, state: str, limit: int, cursor: str | None) -> MessagePage:
        if cursor and _CURSOR_RE[state].fullmatch(cursor) is None:
            raise ValueError(f"invalid {state} cursor {cursor[:40]!r}: pass back a next_cursor of this queue and state")
        if limit == 0:
            return MessagePage(messages=[], next_cursor=cursor or None)
        after, _, messages = await self.walk(queue, state, limit, cursor or "", emit=True)
        return MessagePage(messages=messages, next_cursor=after or None)

    async def walk(self, queue: str, state: str, limit: int, cursor: str, *, emit: bool) -> tuple[str, int, list[MessageInfo]]:
        """One ``peek.lua`` call: ``(next cursor or '', entries read, rows)``."""
        reply = await self._conn.call("peek", self._keys(queue), [state, limit, cursor, PEEK_DUE_SCAN, "1" if emit else "0"])
        after, read, rows = text(reply[0]), int(reply[1]), reply[2:]
        out = []
        for k in range(0, len(rows), 4):
            raw, holder, until, count = rows[k:k + 4]
            envelope, _ = decode(raw, "?", queue)
            out.append(MessageInfo(envelope=envelope, state=state, lease_holder=text(holder) or None,
                                   lease_expires_at=from_us(until) if until >= 0 else None, delivery_count=int(count)))
        return after, read, out

    async def requeue(self, queue: str, ids: set[str]) -> int:
        keys = self._keys(queue)
        reply = await self._conn.call("requeue", keys, sorted(ids))
        changed = int(reply[0])
        moves: list[Any] = []
        now = utcnow()
        for k in range(1, len(reply), 2):
            envelope, ok = decode(reply[k + 1], "?", queue)
            if ok:
                # Ready from now: its age (and its place among equals) starts now.
                moves.extend([reply[k], Broker.ready_now_envelope(envelope, now).to_json(), to_us(now)])
        if moves:
            changed += int(await self._conn.call("promote_now", keys, moves))
        return changed

    async def remove(self, queue: str, ids: set[str]) -> int:
        keys = self._keys(queue)
        wanted = sorted(ids)
        removed = int(await self._conn.call("remove", keys, wanted))
        # Undelivered copies are not indexed: walk each band, a bounded chunk at a time.
        for band in range(BANDS):
            cursor = ""
            while True:
                count, after = await self._conn.call("remove_scan", keys, [band, cursor, REPAIR_BATCH, *wanted])
                removed += int(count)
                cursor = text(after)
                if not cursor:
                    break
        return removed

    async def purge(self, queue: str) -> int:
        total = 0
        while True:
            n = int(await self._conn.call("purge", self._keys(queue), [REPAIR_BATCH]))
            total += n
            if n < REPAIR_BATCH:
                break
        if queue.startswith(REPLY_QUEUE_PREFIX):
            # A control reply queue is used once: its client purges it when done, and
            # then nothing of it stays (streams, group, counters, a registry member).
            await self._drop(queue)
        return total

    async def _drop(self, queue: str) -> None:
        client = self._conn.client
        with self._conn.guard:
            await client.unlink(*self._keys(queue))
            await client.srem(self._registry, queue)


__all__ = ["RedisInspector"]
