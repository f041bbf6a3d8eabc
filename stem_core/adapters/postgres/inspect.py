"""The operator side of ``PostgresBroker``: counts, peeking, requeue/remove/purge and
dead letters (used by ``stem_core.ops``, the CLI and the TUI).

Every reader first runs the maintenance statement for the queues it looks at, so a
delayed row that fell due or a lease that expired is reported as ready even when no
consumer is running; that statement touches only the rows that changed state (index
range scans), so it does not make a read cost grow with the queue.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from ...clock import to_iso, utcnow
from ...contract.types import DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ReplayResult
from .rows import decode, publish_many_params

if TYPE_CHECKING:
    from ...envelope import Envelope
    from .connection import Database
    from .sql import Queries

_PEEK_QUERY = {"pending": "peek_ready", "delayed": "peek_delayed", "inflight": "peek_leased"}


class InspectMixin:
    """Mixed into ``PostgresBroker``; relies on its ``_q`` queries and ``_check_open()`` pool."""

    _q: "Queries"

    if TYPE_CHECKING:  # provided by PostgresBroker and the Broker base class
        def _check_open(self) -> "Database": ...

        @staticmethod
        def replayed_envelope(envelope: Envelope, delay: float | None, *, now: datetime | None = None) -> Envelope: ...

    async def list_queues(self) -> list[str]:
        rows = await self._check_open().fetch(self._q.list_queues)
        return [row[0] for row in rows]

    async def _maintained(self, queues: list[str], query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run maintenance for ``queues`` then ``query``, in one round trip."""
        q = self._q

        async def go(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
            async with conn.pipeline():
                await conn.execute(q.maintain, {"queues": queues})
                cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description is not None else [(cur.rowcount,)]

        return await self._check_open().run(go)

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        rows = await self._maintained(queues, self._q.queue_stats, {"queues": queues})
        return [
            QueueStats(
                queue=name, pending=int(ready), delayed=int(delayed), inflight=int(leased), dead=int(dead),
                oldest_pending_age=None if age is None else max(0.0, float(age)),
                enqueued_total=int(enq), completed_total=int(done),
            )
            for name, ready, delayed, leased, dead, enq, done, age in rows
        ]

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        if limit == 0:
            return []
        query = getattr(self._q, _PEEK_QUERY[state])
        rows = await self._maintained([queue], query, {"queue": queue, "limit": limit, "offset": offset})
        out = []
        for row_id, row_queue, raw, holder, until, count in rows:
            envelope, _ = decode(raw, row_id, row_queue)
            inflight = state == "inflight"
            out.append(MessageInfo(envelope=envelope, state=state, lease_holder=holder if inflight else None,
                                   lease_expires_at=until if inflight else None, delivery_count=count))
        return out

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        now = utcnow()
        rows = await self._maintained([queue], self._q.requeue,
                                      {"queue": queue, "ids": sorted(ids), "now": now, "now_iso": to_iso(now)})
        return int(rows[0][0])

    async def _remove(self, queue: str, ids: set[str]) -> int:
        return await self._check_open().execute(self._q.remove, {"queue": queue, "ids": sorted(ids)})

    async def _purge(self, queue: str) -> int:
        rows = await self._maintained([queue], self._q.purge, {"queue": queue})
        return int(rows[0][0])

    # -- dead letters ---------------------------------------------------------------

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> DeadLetterEntry:
        row_id, _msg_id, queue, reason, meta, raw, dead_at = row
        envelope, _ = decode(raw, row_id, queue)
        return DeadLetterEntry(envelope=envelope, reason=reason, meta=dict(meta or {}), dead_at=dead_at)

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        if limit == 0:
            return DeadLetterPage(entries=[], next_offset=None)
        rows = await self._check_open().fetch(self._q.dead_list, {"queue": queue, "limit": limit + 1, "offset": offset})
        more = len(rows) > limit
        entries = [self._entry(row) for row in rows[:limit]]
        return DeadLetterPage(entries=entries, next_offset=offset + limit if more else None)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        rows = await self._check_open().fetch(self._q.dead_get, {"queue": queue, "msg_id": id})
        return self._entry(rows[0]) if rows else None

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        if limit == 0:
            return ReplayResult(entries=[], dry_run=dry_run)
        q = self._q
        params = {"queue": queue, "since": since, "ids": sorted(ids) if ids is not None else None, "task": task,
                  "limit": limit}

        async def go(conn: psycopg.AsyncConnection) -> list[DeadLetterEntry]:
            async with conn.transaction():
                cur = await conn.execute(q.dead_pick, params)
                rows = await cur.fetchall()
                entries = [self._entry(row) for row in rows]
                if dry_run or not rows:
                    return entries
                now = utcnow()
                replayed = [
                    self.replayed_envelope(e.envelope, delay, now=now).replace(queue=queue)
                    for e in entries
                ]
                await conn.execute(q.dead_delete_ids, {"ids": [row[0] for row in rows]})
                await conn.execute(q.publish_many, publish_many_params(replayed))
                return entries

        return ReplayResult(entries=await self._check_open().run(go), dry_run=dry_run)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._check_open().execute(self._q.dead_purge, {"queue": queue, "since": since, "limit": limit})


__all__ = ["InspectMixin"]
