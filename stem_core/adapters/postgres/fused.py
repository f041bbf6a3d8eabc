"""One statement for a broker step and a co-located result backend's status writes.

With a ``PostgresBackend`` open on the broker's database (any namespace: schemas are
named in every statement), ``Broker.enqueue`` is one statement (status upsert + publish,
durable) and so is ``ack_with_status`` (status upsert + fenced delete, on the settle
pool). ``PostgresPublisher`` and ``PostgresConsumer`` share one ``PostgresFused``, which
builds each backend schema's statements once.
"""

from __future__ import annotations

from ...contract.backend import ResultBackend
from .results import PostgresBackend
from .sql import Queries
from .url import PostgresConfig


class FusedStatements:
    """The statements that write a co-located backend's statuses and do a broker step in
    one round trip: the backend's ``status_upsert``/``statuses_upsert`` CTE, the broker's
    own statement as a second CTE, then the backend's ``status_notify`` (queries.sql). One
    statement is one transaction: the status and the step commit together or not at all,
    and nothing is visible to anyone before both are."""

    __slots__ = ("enqueue_one", "enqueue_many", "ack_one", "ack_many")

    def __init__(self, statuses: Queries, jobs: Queries) -> None:
        parts = statuses.fragments

        def fuse(upsert: str, step: str) -> str:
            return f"WITH {parts[upsert]}, job AS ({step}), {parts['status_notify']}"

        self.enqueue_one = fuse("status_upsert", jobs.publish_one)
        self.enqueue_many = fuse("statuses_upsert", jobs.publish_many)
        self.ack_one = fuse("status_upsert", jobs.ack)
        self.ack_many = fuse("statuses_upsert", jobs.ack_many)


class PostgresFused:
    """The fused statements of one broker, per co-located backend schema."""

    def __init__(self, config: PostgresConfig, jobs: Queries) -> None:
        self._config = config
        self._jobs = jobs
        self._by_schema: dict[str, FusedStatements] = {}

    def statements_for(self, backend: ResultBackend) -> FusedStatements | None:
        """The fused statements for ``backend``, or None when it is not an open
        ``PostgresBackend`` on the broker's database (then the two-step path runs)."""
        if not isinstance(backend, PostgresBackend):
            return None
        statuses = backend.colocated_queries(self._config)
        if statuses is None:
            return None
        fused = self._by_schema.get(statuses.schema)
        if fused is None:
            fused = self._by_schema[statuses.schema] = FusedStatements(statuses, self._jobs)
        return fused


__all__ = ["FusedStatements", "PostgresFused"]
