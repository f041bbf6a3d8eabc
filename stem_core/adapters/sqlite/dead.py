"""``SQLiteDeadLetters``: the dead letters of each queue - pages, one by id, replay, purge.

One hop each; the transactions are in ``repair.py``. Replay and purge pick their entries
in the transaction that changes them, with the contract's filter and replayed envelope
(``Broker.matches_replay``, ``Broker.replayed_envelope``) applied there.
"""

from __future__ import annotations

from datetime import datetime

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import DeadLetterEntry, DeadLetterPage, ReplayResult
from . import repair
from .db import SQLiteDatabase


class SQLiteDeadLetters:
    """``page``, ``get``, ``replay`` and ``purge`` over one database."""

    def __init__(self, db: SQLiteDatabase, namespace: str) -> None:
        self._db = db
        self._namespace = namespace

    async def page(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        return await self._db.read(repair.dead_page, self._namespace, queue, limit, offset)

    async def get(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._db.read(repair.dead_get, self._namespace, queue, id)

    async def replay(self, queue: str, *, limit: int, since: datetime | None, delay: float | None, dry_run: bool,
                     ids: set[str] | None, task: str | None) -> ReplayResult:
        now = utcnow()
        entries = await self._db.run(
            lambda conn: repair.replay(
                conn, self._namespace, queue, limit=limit, since=since, ids=ids, task=task, dry_run=dry_run,
                accept=lambda entry: Broker.matches_replay(entry, since, ids, task),
                rebuild=lambda env: Broker.replayed_envelope(env, delay, now=now, queue=queue),
            )
        )
        if entries and not dry_run:
            self._db.bell.ring()
        return ReplayResult(entries=entries, dry_run=dry_run)

    async def purge(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._db.run(
            lambda conn: repair.purge_dead(
                conn, self._namespace, queue, since=since, limit=limit,
                accept=lambda entry: Broker.matches_replay(entry, since, None, None),
            )
        )


__all__ = ["SQLiteDeadLetters"]
