"""Producing on the PostgreSQL broker: one ``INSERT`` per publish or batch, durable.

Publishes commit synchronously on the durable pool. With ``on=`` (a
``psycopg.AsyncConnection``) the rows are inserted inside the caller's current
transaction instead, so the job commits or rolls back with the application's own rows.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ...contract.backend import ResultBackend, StatusWrite
from ...envelope import Envelope
from .connection import PostgresConnection, translate
from .fused import PostgresFused
from .results import status_params, status_row, statuses_params
from .rows import publish_many_params, publish_params
from .sql import Queries


class PostgresPublisher:
    """``publish``/``publish_many`` and the fused enqueue of ``Broker.enqueue``."""

    def __init__(self, connection: PostgresConnection, queries: Queries, fused: PostgresFused) -> None:
        self._connection = connection
        self._q = queries
        self._fused = fused

    def _statement(self, envelopes: list[Envelope]) -> tuple[str, dict[str, Any]]:
        if len(envelopes) == 1:
            return self._q.publish_one, publish_params(envelopes[0])
        return self._q.publish_many, publish_many_params(envelopes)

    async def publish(self, envelopes: list[Envelope], *, on: psycopg.AsyncConnection | None = None) -> None:
        """Insert routed ``envelopes`` in one statement, on ``on`` when given."""
        if on is None:
            db = self._connection.durable()
            query, params = self._statement(envelopes)
            await db.execute(query, params)
            return
        if not isinstance(on, psycopg.AsyncConnection):
            raise ValueError(f"connection must be a psycopg.AsyncConnection, got {type(on).__name__}")
        self._connection.durable()  # a closed broker refuses, whoever's connection it is
        query, params = self._statement(envelopes)
        with translate(self._connection.config):
            await on.execute(query, params)

    async def enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        """``Broker._enqueue_with``: statuses and publish in one statement, or False."""
        fused = self._fused.statements_for(backend)
        if fused is None:
            return False
        db = self._connection.durable()
        # The same writes as the two-step path (each status as write_status stores it),
        # then publish_one / publish_many.
        if len(envelopes) == 1:
            query, params = fused.enqueue_one, {**status_params(status_row(writes[0])), **publish_params(envelopes[0])}
        else:
            latest = {w.task_id: w for w in writes}  # one row per id in a statement: the last write wins
            query, params = fused.enqueue_many, {**statuses_params(latest.values()), **publish_many_params(envelopes)}
        # Publishes commit durably (durable pool); the statuses ride in the same commit.
        await db.execute(query, params)
        return True


__all__ = ["PostgresPublisher"]
