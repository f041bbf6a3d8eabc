"""``PostgresBroker``: the durable, SQL-visible broker (SPEC §4.4).

Layout (one schema per namespace, see ``migrations/0001_broker.sql``): a ``jobs`` table
whose rows are ready, delayed or leased; ``queue_counts`` kept by triggers in the same
transaction as every change; ``dead_letters``; ``broadcasts`` with per-subscriber cursors.

Consuming: a claim is one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)``,
priority then age, up to the room left under the prefetch cap. Leases are
``locked_until`` on the database clock; a receipt is ``"<row id>:<lease number>"`` and
every claim or operator requeue bumps the number, which fences stale settles. Idle
consumers sleep on a LISTEN connection (one per broker) and wake on NOTIFY, which the
counters trigger sends only when a queue goes from empty to non-empty; their sleep is
also bounded by the next delayed row or lease falling due, and by ``IDLE_RECHECK_S``
(a slow fallback for notifications lost while the listener reconnects, and for leases
other consumers took since we last looked).

Durability: publishes commit synchronously. Claims and settlements run on a second
pool with ``synchronous_commit=off``: a server crash can lose the last few of those,
which means a message is delivered again (at-least-once), never that one is lost.

Transactional enqueue: ``publish(..., connection=conn)`` / ``publish_many(...,
connection=conn)`` insert on the caller's ``psycopg.AsyncConnection`` inside the caller's
transaction, so the job commits or rolls back with the application's own rows.

With a ``PostgresBackend`` on the same database (any namespace), ``Broker.enqueue`` is
one statement (status upsert + publish, durable) and ``ack_with_status`` too (status
upsert + fenced delete, on the settle pool; settles of one event-loop turn share it).

Modules: this file (lifecycle, producing, settling), ``consume.py`` (subscriptions,
claims, broadcasts), ``inspect.py`` (operator reads and repairs), ``janitor.py`` (VACUUM
when dead rows pile up), ``listener.py`` (LISTEN), ``connection.py`` (URL, pools, the
error boundary), ``sql.py`` with ``queries.sql`` and ``migrations/``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, ClassVar, Iterable

import psycopg

from ..._aio import UNSENT, TurnBatch
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker
from ...contract.types import Capabilities
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, LeaseLost
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .connection import (
    QUEUE_CHANNEL_SUFFIX,
    Database,
    PgConfig,
    Pools,
    parse_url,
    positive_float,
    positive_int,
    schema_name,
    translate,
)
from .consume import SUBSCRIBER_STALE_S, ConsumeMixin, _Sub
from .inspect import InspectMixin
from .listener import Listener
from .results import PostgresBackend, status_params, status_row, status_rows_params, statuses_params
from .rows import dead_letter_meta, parse_receipt, publish_many_params, publish_params, unique_runs
from .sql import Queries, migrate

BROKER_OPTIONS = {"lease_seconds": positive_float, "pool_size": positive_int}


class _Fused:
    """The statements that write a co-located backend's statuses and do a broker step in
    one round trip: the backend's ``status_upsert``/``statuses_upsert`` CTE, the broker's own statement as a
    second CTE, then the backend's ``status_notify`` (queries.sql). One statement is one
    transaction: the status and the step commit together or not at all, and nothing is
    visible to anyone before both are."""

    __slots__ = ("enqueue_one", "enqueue_many", "ack_one", "ack_many")

    def __init__(self, statuses: Queries, jobs: Queries) -> None:
        parts = statuses.fragments

        def fuse(upsert: str, step: str) -> str:
            return f"WITH {parts[upsert]}, job AS ({step}), {parts['status_notify']}"

        self.enqueue_one = fuse("status_upsert", jobs.publish_one)
        self.enqueue_many = fuse("statuses_upsert", jobs.publish_many)
        self.ack_one = fuse("status_upsert", jobs.ack)
        self.ack_many = fuse("statuses_upsert", jobs.ack_many)


class PostgresBroker(ConsumeMixin, InspectMixin, Broker):
    """The PostgreSQL broker; see the module docstring for the design."""

    scheme: ClassVar[str] = "postgresql"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True, priority=True, broadcast=True, dead_letters=True, lease_extension=True, peek=True,
        durable=True, cross_process=True,
    )

    def __init__(self, config: PgConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, pool_size: int | None = None) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self._config = config
        self.schema = schema_name(self.namespace)
        self._q = Queries(self.schema)
        self._pools = Pools(config, name=f"stem-{self.namespace}", pool_size=pool_size)
        self._listener: Listener | None = None
        self._by_queue: dict[str, set[_Sub]] = {}
        self._by_channel: dict[str, set[_Sub]] = {}
        self._prefetch_total = 0
        self._closed = False
        self._default_ms = int(round(self.lease_seconds * 1000))
        self._background: set[asyncio.Task[Any]] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._fused: dict[str, _Fused] = {}
        # ack_with_status calls made in one event-loop turn settle together.
        self._settles: TurnBatch[tuple[_Fused, tuple[Any, ...], int, int]] = TurnBatch(self._settle_rows)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "PostgresBroker":
        config = parse_url(url, options, BROKER_OPTIONS)
        return cls(config, namespace=namespace, **config.options)

    def __repr__(self) -> str:
        return f"PostgresBroker({self._config.shown_url!r}, namespace={self.namespace!r})"

    # -- lifecycle ------------------------------------------------------------------

    async def connect(self) -> "PostgresBroker":
        if self._pools.main is not None:
            return self
        await self._pools.open(lambda conn: migrate(conn, self.schema))
        self._closed = False
        return self

    async def close(self) -> None:
        self._closed = True
        janitor, self._janitor = self._janitor, None
        if janitor is not None:
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
        for subs in (*self._by_queue.values(), *self._by_channel.values()):
            for st in subs:
                st.wake.set()
        await self._settles.drain()
        for task in list(self._background):
            await asyncio.gather(task, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        await self._pools.close()

    def _check_open(self) -> Database:
        db = self._pools.main
        if self._closed or db is None:
            raise BrokerUnavailable(f"the PostgreSQL broker for {self._config.shown_url} is closed")
        return db

    async def _settle_pool(self) -> Database:
        """The ``synchronous_commit=off`` pool for claims and settlements, opened on first use."""
        self._check_open()
        return await self._pools.fast()

    # -- producing ------------------------------------------------------------------

    async def publish(self, envelope: Envelope, *, queue: str | None = None, priority: int | None = None,
                      connection: psycopg.AsyncConnection | None = None) -> None:
        """Persist one envelope. With ``connection`` (a ``psycopg.AsyncConnection``), insert it
        inside that connection's current transaction: it commits or rolls back with it."""
        routed = self.route(envelope, queue, priority)
        if connection is None:
            await self._publish([routed])
        else:
            await self._publish_on(connection, [routed])

    async def publish_many(self, envelopes: Iterable[Envelope], *,
                           connection: psycopg.AsyncConnection | None = None) -> None:
        """Persist many envelopes in one statement (optionally in the caller's transaction)."""
        batch = [self.route(env) for env in envelopes]
        if not batch:
            return
        if connection is None:
            await self._publish(batch)
        else:
            await self._publish_on(connection, batch)

    def _publish_statement(self, envelopes: list[Envelope]) -> tuple[str, dict[str, Any]]:
        if len(envelopes) == 1:
            return self._q.publish_one, publish_params(envelopes[0])
        return self._q.publish_many, publish_many_params(envelopes)

    async def _publish(self, envelopes: list[Envelope]) -> None:
        db = self._check_open()
        query, params = self._publish_statement(envelopes)
        await db.execute(query, params)

    async def _publish_on(self, connection: psycopg.AsyncConnection, envelopes: list[Envelope]) -> None:
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ValueError(f"connection must be a psycopg.AsyncConnection, got {type(connection).__name__}")
        self._check_open()
        query, params = self._publish_statement(envelopes)
        with translate(self._config):
            await connection.execute(query, params)

    # -- with a co-located result backend: one statement each -------------------------

    def _fused_with(self, backend: ResultBackend) -> _Fused | None:
        """The fused statements for ``backend``, or None when it is not an open
        ``PostgresBackend`` on this broker's database (any namespace: schemas are named)."""
        if not isinstance(backend, PostgresBackend) or not backend.colocated(self._config):
            return None
        fused = self._fused.get(backend.schema)
        if fused is None:
            fused = self._fused[backend.schema] = _Fused(backend._q, self._q)
        return fused

    async def _enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        fused = self._fused_with(backend)
        if fused is None:
            return False
        db = self._check_open()
        # The same writes as the two-step path (each status as write_status stores it),
        # then publish_one / publish_many.
        if len(envelopes) == 1:
            query, params = fused.enqueue_one, {**status_params(status_row(writes[0])), **publish_params(envelopes[0])}
        else:
            latest = {w.task_id: w for w in writes}  # one row per id in a statement: the last write wins
            query, params = fused.enqueue_many, {**statuses_params(latest.values()), **publish_many_params(envelopes)}
        # Publishes commit durably (main pool); the statuses ride in the same commit.
        await db.execute(query, params)
        return True

    async def _ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        fused = self._fused_with(backend)
        if fused is None:
            return False
        args = await self._settle_args(delivery)
        if args is None:
            return False
        _, row_id, lease = args
        await self._settles.add((fused, status_row(write), row_id, lease))
        return True

    async def _settle_rows(self, batch: list[tuple[_Fused, tuple[Any, ...], int, int]]) -> list[Any]:
        """Settle together what was settled during one event-loop turn (tasks of one
        claimed batch tend to finish together): one statement instead of one each.

        Status upserts and fenced DELETEs in one statement on the settle pool
        (synchronous_commit=off): a server crash loses both or neither, so the worst case
        is a task running again, never an acked task without its status. A stale receipt
        deletes nothing; its status is stored all the same. Outcomes: None per settle, or
        the error of its statement (and of every later one: they are not sent)."""
        outcomes: list[Any] = [UNSENT] * len(batch)
        try:
            db = await self._settle_pool()
            by_backend: dict[int, list[tuple[int, Any]]] = {}
            for k, item in enumerate(batch):
                by_backend.setdefault(id(item[0]), []).append((k, item))
            for items in by_backend.values():
                for run in unique_runs(items, lambda entry: entry[1][1][0]):  # one status per task a statement
                    fused = run[0][1][0]
                    if len(run) == 1:
                        _, row, row_id, lease = run[0][1]
                        query, params = fused.ack_one, {**status_params(row), "id": row_id, "lease": lease}
                    else:
                        query, params = fused.ack_many, status_rows_params([item[1] for _, item in run])
                        params["row_ids"] = [item[2] for _, item in run]
                        params["leases"] = [item[3] for _, item in run]
                    await db.execute(query, params)
                    for k, _ in run:
                        outcomes[k] = None
        except Exception as exc:  # noqa: BLE001 - the settles not yet sent fail with it
            outcomes = [exc if outcome is UNSENT else outcome for outcome in outcomes]
        return outcomes

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        db = self._check_open()
        q = self._q
        body = envelope.to_json()

        async def go(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute(q.channel_lock, {"key": self._channel_key(channel)})
                await conn.execute(q.broadcast_insert, {"channel": channel, "envelope": body})
                await conn.execute(q.broadcast_cleanup, {"channel": channel, "stale_s": SUBSCRIBER_STALE_S})
                await conn.execute("SELECT pg_notify(%s, %s)", (self.schema + QUEUE_CHANNEL_SUFFIX, "b:" + channel))

        await db.run(go)

    def _channel_key(self, channel: str) -> str:
        return f"{self.schema}:broadcast:{channel}"

    # -- settling -------------------------------------------------------------------

    async def _settle_args(self, delivery: Delivery) -> tuple[Database, int, int] | None:
        """The pool and ``(row id, lease)`` for a queue delivery; None when there is nothing
        to settle (a broadcast copy, or a receipt that is not ours)."""
        self._check_open()
        if delivery.channel is not None:
            return None
        parsed = parse_receipt(delivery.receipt)
        if parsed is None:
            return None
        return await self._settle_pool(), parsed[0], parsed[1]

    async def _ack(self, delivery: Delivery) -> None:
        args = await self._settle_args(delivery)
        if args is not None:
            db, row_id, lease = args
            await db.execute(self._q.ack, {"id": row_id, "lease": lease})

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        args = await self._settle_args(delivery)
        if args is None:
            return
        db, row_id, lease = args
        if not requeue:
            await db.execute(self._q.drop, {"id": row_id, "lease": lease})
            return
        env = self.requeued_envelope(delivery.envelope, delay)
        await db.execute(self._q.nack, {
            "id": row_id, "lease": lease, "not_before": env.not_before, "ready_at": env.ready_at,
            "envelope": env.to_json(),
        })

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        args = await self._settle_args(delivery)
        if args is None:
            raise LeaseLost(f"receipt {delivery.receipt!r} does not hold a PostgreSQL lease")
        db, row_id, lease = args
        rows = await db.fetch(self._q.extend, {"id": row_id, "lease": lease, "seconds": seconds})
        if not rows:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        return rows[0][0]

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        args = await self._settle_args(delivery)
        if args is None:
            return
        db, row_id, lease = args
        await db.execute(self._q.dead_letter, {
            "id": row_id, "lease": lease, "msg_id": None, "name": None, "reason": reason,
            "meta": dead_letter_meta(meta), "envelope": None,
        })



__all__ = ["PostgresBroker"]
