"""``MemoryDeadLetters``: the dead letters of each queue - pages, one by id, replay, purge.

A queue keeps at most one dead letter per envelope id, in dead-letter order (a newer one
replaces the old, see ``MemoryStore.bury``); pages list newest first, replay and purge
take the oldest first. The replay filter and the replayed envelope are the contract's
(``Broker.matches_replay``, ``Broker.replayed_envelope``).
"""

from __future__ import annotations

import itertools
from datetime import datetime

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import DeadLetterEntry, DeadLetterPage, ReplayResult
from .connection import MemoryConnection
from .store import MemorySubscription, wake


class MemoryDeadLetters:
    """``page``, ``get``, ``replay`` and ``purge`` over one connection's store."""

    def __init__(self, connection: MemoryConnection) -> None:
        self._connection = connection
        self._store = connection.store

    async def page(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        self._connection.check_open()
        with self._store.lock:
            q = self._store.queues.get(queue)
            if q is None:
                return DeadLetterPage(entries=[], next_offset=None)
            total = len(q.dead)
            entries = list(itertools.islice(reversed(q.dead.values()), offset, offset + limit))
        end = offset + len(entries)
        return DeadLetterPage(entries=entries, next_offset=end if end < total and limit > 0 else None)

    async def get(self, queue: str, id: str) -> DeadLetterEntry | None:
        self._connection.check_open()
        with self._store.lock:
            q = self._store.queues.get(queue)
            return q.dead.get(id) if q is not None else None

    async def replay(self, queue: str, *, limit: int, since: datetime | None, delay: float | None, dry_run: bool,
                     ids: set[str] | None, task: str | None) -> ReplayResult:
        """Move matching dead letters (oldest first) back onto ``queue``, in one step."""
        self._connection.check_open()
        store = self._store
        waiting: list[MemorySubscription] = []
        with store.lock:
            q = store.queues.get(queue)
            if q is None or limit == 0:
                return ReplayResult(entries=[], dry_run=dry_run)
            matches = (e for e in q.dead.values() if Broker.matches_replay(e, since, ids, task))
            picked = list(itertools.islice(matches, limit))
            if not dry_run and picked:
                now = utcnow()
                for entry in picked:
                    del q.dead[entry.envelope.id]
                store.publish([
                    Broker.replayed_envelope(entry.envelope, delay, now=now, queue=queue) for entry in picked
                ])
                waiting = store.waiting_on({queue})
        wake(waiting)
        return ReplayResult(entries=picked, dry_run=dry_run)

    async def purge(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        """Delete dead letters (``dead_at >= since``), oldest first, at most ``limit``."""
        self._connection.check_open()
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


__all__ = ["MemoryDeadLetters"]
