"""``SQLitePublisher``: messages into the file, and the fused ``enqueue`` (the statuses and
the rows in one transaction) when the result backend shares the broker's connection.

Each call is one hop to the database thread (``jobs.publish``, ``jobs.enqueue``), then
the file's doorbell rings so idle consumers in this process look at once.
"""

from __future__ import annotations

from ...contract.backend import ResultBackend, StatusWrite
from ...envelope import Envelope
from . import jobs
from .backend import fused_statuses
from .db import SQLiteDatabase


class SQLitePublisher:
    """``publish`` and ``publish_many`` (the contract hands both over as one list), ``enqueue``."""

    def __init__(self, db: SQLiteDatabase, namespace: str) -> None:
        self._db = db
        self._namespace = namespace

    async def publish(self, envelopes: list[Envelope]) -> None:
        await self._db.run(jobs.publish, self._namespace, envelopes)
        self._db.bell.ring()

    async def enqueue(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        """Statuses and envelopes in one transaction; False (nothing done) when ``backend``
        is not on this connection."""
        statuses = fused_statuses(backend, self._db, writes)
        if statuses is None:
            return False
        await self._db.run(jobs.enqueue, self._namespace, envelopes, statuses)
        self._db.bell.ring()
        return True


__all__ = ["SQLitePublisher"]
