"""Operator reads and repairs of the PostgreSQL broker: counts, peeking, requeue, remove
and purge (used by ``stem_core.ops``, the CLI and the TUI).

Every reader first runs the maintenance statement for the queues it looks at, so a
delayed row that fell due or a lease that expired is reported as ready even when no
consumer is running; that statement touches only the rows that changed state (index
range scans), so it does not make a read cost grow with the queue.

``page`` pages by keyset cursor: the last row's sort key (times as integer microseconds,
exact), and the next page is one index seek past it (``queries.sql``: ``peek_*_after``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from ... import signing
from ...clock import to_iso, utcnow
from ...contract.broker import Broker
from ...contract.cursor import decode_key, encode_key
from ...contract.types import MessageInfo, MessagePage, QueueStats
from ...settings import PRUNE_BATCH, REPLY_QUEUE_PREFIX, REPLY_QUEUE_TTL_SECONDS
from .connection import PostgresConnection
from .rows import decode
from .sql import Queries

_PEEK_QUERY = {"pending": "peek_ready", "delayed": "peek_delayed", "inflight": "peek_leased"}
_PEEK_AFTER = {"pending": "peek_ready_after", "delayed": "peek_delayed_after", "inflight": "peek_leased_after"}
# A page cursor is the last row's sort key: pending (priority, ready_at, id), delayed
# (ready_at, id), inflight (locked_until, id); times as microseconds since the epoch.
_KEY_KINDS: dict[str, tuple[type, ...]] = {"pending": (int, int, int), "delayed": (int, int), "inflight": (int, int)}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
# timestamptz holds 4713 BC .. 294276 AD; cursors only ever name times Python can hold.
_MIN_US = (datetime(1, 1, 2, tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND
_MAX_US = (datetime(9999, 12, 31, tzinfo=timezone.utc) - _EPOCH) // _MICROSECOND


class PostgresInspector:
    """``list_queues``, ``queue_stats``, ``peek``, ``requeue``, ``remove`` and ``purge``."""

    def __init__(self, connection: PostgresConnection, queries: Queries) -> None:
        self._connection = connection
        self._q = queries

    async def list_queues(self) -> list[str]:
        rows = await self._connection.durable().fetch(self._q.list_queues)
        return [row[0] for row in rows]

    async def _maintained(self, queues: list[str], query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run maintenance for ``queues`` then ``query``, in one round trip."""
        q = self._q

        async def go(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
            async with conn.pipeline():
                await conn.execute(q.maintain, {"queues": queues})
                cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description is not None else [(cur.rowcount,)]

        return await self._connection.durable().run(go)

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        rows = await self._maintained(queues, self._q.queue_stats, {"queues": queues})
        return [
            QueueStats(
                queue=name, pending=int(ready), delayed=int(delayed), inflight=int(leased), dead=int(dead),
                oldest_pending_age=None if age is None else max(0.0, float(age)),
                enqueued_total=int(enq), completed_total=int(done),
            )
            for name, ready, delayed, leased, dead, enq, done, age in rows
        ]

    async def peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        if limit == 0:
            return []
        query = getattr(self._q, _PEEK_QUERY[state])
        rows = await self._maintained([queue], query, {"queue": queue, "limit": limit, "offset": offset})
        return [_info(row, state) for row in rows]

    async def page(self, queue: str, state: str, limit: int, cursor: str | None) -> MessagePage:
        """``limit`` messages after the row ``cursor`` names (None: from the first), and
        the next page's cursor (None at the end)."""
        params: dict[str, Any] = {"queue": queue, "limit": limit + 1, "offset": 0}
        query = getattr(self._q, _PEEK_QUERY[state])
        if cursor is not None:
            params.update(_after(cursor, state))
            query = getattr(self._q, _PEEK_AFTER[state])
        if limit == 0:
            return MessagePage(messages=[], next_cursor=cursor)
        rows = await self._maintained([queue], query, params)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more:
            row_id, _queue, _raw, _holder, until, _count, priority, ready_at = rows[-1]
            if state == "pending":
                key: tuple[int, ...] = (int(priority), _micros(ready_at), int(row_id))
            else:
                key = (_micros(until if state == "inflight" else ready_at), int(row_id))
            next_cursor = encode_key(state, key)
        return MessagePage(messages=[_info(row, state) for row in rows], next_cursor=next_cursor)

    async def requeue(self, queue: str, ids: set[str]) -> int:
        now = utcnow()
        wanted = sorted(ids)
        signed_ids: list[str] = []
        signed: list[str] = []
        if signing.current() is not None:
            # notBefore is signed: the rewritten envelope is signed in Python, not by jsonb_set.
            for row_id, msg_id, raw in await self._connection.durable().fetch(
                    self._q.requeue_delayed_envelopes, {"queue": queue, "ids": wanted}):
                envelope, ok = decode(raw, row_id, queue)
                if ok:
                    signed_ids.append(msg_id)
                    signed.append(Broker.ready_now_envelope(envelope, now).to_json())
        rows = await self._maintained([queue], self._q.requeue,
                                      {"queue": queue, "ids": wanted, "now": now, "now_iso": to_iso(now),
                                       "signed_ids": signed_ids, "signed_envelopes": signed})
        return int(rows[0][0])

    async def remove(self, queue: str, ids: set[str]) -> int:
        return await self._connection.durable().execute(self._q.remove, {"queue": queue, "ids": sorted(ids)})

    async def purge(self, queue: str) -> int:
        rows = await self._maintained([queue], self._q.purge, {"queue": queue})
        if queue.startswith(REPLY_QUEUE_PREFIX):
            # A control reply queue is used once: nothing of it stays (rows, counters).
            q = self._q

            async def drop(conn: psycopg.AsyncConnection) -> None:
                async with conn.pipeline():
                    await conn.execute(q.drop_queue_jobs, {"queue": queue})
                    await conn.execute(q.drop_queue_counts, {"queue": queue})
                    # And what late replies left in reply queues purged before (bounded).
                    stale = {"prefix": REPLY_QUEUE_PREFIX, "before_s": REPLY_QUEUE_TTL_SECONDS, "batch": PRUNE_BATCH}
                    await conn.execute(q.stale_reply_jobs, stale)
                    await conn.execute(q.stale_reply_counts, stale)

            await self._connection.durable().run(drop)
        return int(rows[0][0])


def _info(row: tuple[Any, ...], state: str) -> MessageInfo:
    row_id, row_queue, raw, holder, until, count = row[:6]
    envelope, _ = decode(raw, row_id, row_queue)
    inflight = state == "inflight"
    return MessageInfo(envelope=envelope, state=state, lease_holder=holder if inflight else None,
                       lease_expires_at=until if inflight else None, delivery_count=count)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _after(cursor: str, state: str) -> dict[str, Any]:
    """The query parameters of the key ``cursor`` names (``ValueError`` for anything
    ``page`` did not hand out for this state)."""
    key = decode_key(cursor, state, _KEY_KINDS[state])
    *head, at_us, row_id = key
    if not _MIN_US <= at_us <= _MAX_US or any(not 0 <= p <= 9 for p in head):
        raise ValueError(f"invalid {state} cursor {cursor[:40]!r}: pass back a next_cursor of this queue and state")
    params: dict[str, Any] = {"at": _EPOCH + at_us * _MICROSECOND, "id": row_id}
    if head:
        params["priority"] = head[0]
    return params


__all__ = ["PostgresInspector"]
