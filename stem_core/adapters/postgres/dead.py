"""Dead letters of the PostgreSQL broker: list (newest first), get, replay, purge.

A dead letter is a row of ``dead_letters``, one per queue and envelope id. A replay
locks the entries it picks (two replays never move one entry twice) and moves them back
to ``jobs`` in one transaction, so each message ends up either dead or live, never both
or neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import DeadLetterEntry, DeadLetterPage, ReplayResult
from .connection import PostgresConnection
from .rows import decode, publish_many_params
from .sql import Queries


class PostgresDeadLetters:
    """The dead-letter primitives of ``Broker``."""

    def __init__(self, connection: PostgresConnection, queries: Queries) -> None:
        self._connection = connection
        self._q = queries

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> DeadLetterEntry:
        row_id, _msg_id, queue, reason, meta, raw, dead_at = row
        envelope, _ = decode(raw, row_id, queue)
        return DeadLetterEntry(envelope=envelope, reason=reason, meta=dict(meta or {}), dead_at=dead_at)

    async def list_page(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        if limit == 0:
            return DeadLetterPage(entries=[], next_offset=None)
        rows = await self._connection.durable().fetch(self._q.dead_list,
                                                      {"queue": queue, "limit": limit + 1, "offset": offset})
        more = len(rows) > limit
        entries = [self._entry(row) for row in rows[:limit]]
        return DeadLetterPage(entries=entries, next_offset=offset + limit if more else None)

    async def get(self, queue: str, id: str) -> DeadLetterEntry | None:
        rows = await self._connection.durable().fetch(self._q.dead_get, {"queue": queue, "msg_id": id})
        return self._entry(rows[0]) if rows else None

    async def replay(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
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
                    Broker.replayed_envelope(e.envelope, delay, now=now, queue=queue)
                    for e in entries
                ]
                await conn.execute(q.dead_delete_ids, {"ids": [row[0] for row in rows]})
                await conn.execute(q.publish_many, publish_many_params(replayed))
                return entries

        return ReplayResult(entries=await self._connection.durable().run(go), dry_run=dry_run)

    async def purge(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._connection.durable().execute(self._q.dead_purge,
                                                        {"queue": queue, "since": since, "limit": limit})


__all__ = ["PostgresDeadLetters"]
