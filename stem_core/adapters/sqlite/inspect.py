"""``SQLiteInspector``: what an operator sees and repairs - queue names, counters, pages of
messages by state, and requeue / remove / purge by id. One hop each; the transactions
(and how they read counters kept by triggers) are in ``repair.py``.
"""

from __future__ import annotations

from ...contract.types import MessageInfo, MessagePage, QueueStats
from . import repair
from .db import SQLiteDatabase


class SQLiteInspector:
    """``list_queues``, ``queue_stats``, ``peek``, ``requeue``, ``remove`` and ``purge``."""

    def __init__(self, db: SQLiteDatabase, namespace: str) -> None:
        self._db = db
        self._namespace = namespace

    async def list_queues(self) -> list[str]:
        return await self._db.read(repair.list_queues, self._namespace)

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        return await self._db.read(repair.queue_stats, self._namespace, queues)

    async def peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        return await self._db.read(repair.peek, self._namespace, queue, state, limit, offset)

    async def page(self, queue: str, state: str, limit: int, cursor: str | None) -> MessagePage:
        after = repair.page_after(cursor, state)
        if limit == 0:
            return MessagePage(messages=[], next_cursor=cursor)
        return await self._db.read(repair.page, self._namespace, queue, state, limit, after)

    async def requeue(self, queue: str, ids: set[str]) -> int:
        count = await self._db.run(repair.requeue, self._namespace, queue, ids)
        if count:
            self._db.bell.ring()
        return count

    async def remove(self, queue: str, ids: set[str]) -> int:
        return await self._db.run(repair.remove, self._namespace, queue, ids)

    async def purge(self, queue: str) -> int:
        return await self._db.run(repair.purge, self._namespace, queue)


__all__ = ["SQLiteInspector"]
