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

The parts, each given what it needs: ``connection.py`` (``PostgresConnection``: the two
pools, open/closed, the error boundary), ``publish.py`` (``PostgresPublisher``),
``consume.py`` (``PostgresConsumer``, with ``subscription.py``, ``listener.py`` and
``janitor.py``), ``channels.py`` (``PostgresChannels``), ``inspect.py``
(``PostgresInspector``), ``dead.py`` (``PostgresDeadLetters``), ``fused.py`` (the
statements shared with a co-located ``PostgresBackend``); ``url.py`` parses the URL;
``sql.py`` loads ``queries.sql`` and ``migrations/``. Every part is complete here: all
capabilities are true.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Iterable

import psycopg

from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, MessagePage, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .channels import PostgresChannels
from .connection import PostgresConnection, schema_name
from .consume import PostgresConsumer
from .dead import PostgresDeadLetters
from .fused import PostgresFused
from .inspect import PostgresInspector
from .publish import PostgresPublisher
from .sql import Queries, migrate
from .url import PostgresConfig, parse_url, positive_float, positive_int

BROKER_OPTIONS = {"lease_seconds": positive_float, "pool_size": positive_int}


class PostgresBroker(Broker):
    """The PostgreSQL broker; see the module docstring for the design."""

    scheme: ClassVar[str] = "postgresql"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True, priority=True, broadcast=True, dead_letters=True, lease_extension=True, peek=True,
        durable=True, cross_process=True,
    )

    def __init__(self, config: PostgresConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, pool_size: int | None = None) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self._config = config
        self.schema = schema_name(self.namespace)
        # The parts hold no connection until connect(): building them here means every
        # primitive of an unconnected broker reports it closed, not a missing attribute.
        self._connection = PostgresConnection(config, self.schema, name=f"stem-{self.namespace}",
                                              pool_size=pool_size, label="broker")
        queries = Queries(self.schema)
        fused = PostgresFused(config, queries)
        self._publisher = PostgresPublisher(self._connection, queries, fused)
        self._channels = PostgresChannels(self._connection, queries)
        self._consumer = PostgresConsumer(self._connection, queries, self._channels, fused,
                                          namespace=self.namespace, lease_seconds=self.lease_seconds,
                                          dead_letter_retention=self.dead_letter_retention)
        self._inspector = PostgresInspector(self._connection, queries)
        self._dead = PostgresDeadLetters(self._connection, queries)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "PostgresBroker":
        config = parse_url(url, options, BROKER_OPTIONS)
        return cls(config, namespace=namespace, **config.options)

    def __repr__(self) -> str:
        return f"PostgresBroker({self._config.shown_url!r}, namespace={self.namespace!r})"

    # -- lifecycle ------------------------------------------------------------------

    async def connect(self) -> "PostgresBroker":
        await self._connection.open(lambda conn: migrate(conn, self.schema))
        return self

    async def close(self) -> None:
        self._connection.mark_closed()  # first: the waiters the consumer wakes must find it closed
        await self._consumer.close()
        await self._connection.close()

    # -- producing ------------------------------------------------------------------

    async def publish(self, envelope: Envelope, *, queue: str | None = None, priority: int | None = None,
                      connection: psycopg.AsyncConnection | None = None) -> None:
        """Persist one envelope. With ``connection`` (a ``psycopg.AsyncConnection``), insert it
        inside that connection's current transaction: it commits or rolls back with it."""
        await self._publisher.publish([self.route(envelope, queue, priority)], on=connection)

    async def publish_many(self, envelopes: Iterable[Envelope], *,
                           connection: psycopg.AsyncConnection | None = None) -> None:
        """Persist many envelopes in one statement (optionally in the caller's transaction)."""
        batch = self.route_all(envelopes)
        if batch:
            await self._publisher.publish(batch, on=connection)

    async def _publish(self, envelopes: list[Envelope]) -> None:
        await self._publisher.publish(envelopes)

    async def _enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        return await self._publisher.enqueue_with(backend, envelopes, writes)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        await self._channels.broadcast(channel, envelope)

    # -- consuming and settling -----------------------------------------------------

    async def _open_subscription(self, sub: Subscription) -> None:
        await self._consumer.open_subscription(sub)

    async def _close_subscription(self, sub: Subscription) -> None:
        await self._consumer.close_subscription(sub)

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        return await self._consumer.receive(sub, limit, timeout)

    async def _ack(self, delivery: Delivery) -> None:
        await self._consumer.ack(delivery)

    async def _ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        return await self._consumer.ack_with(delivery, backend, write)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        await self._consumer.nack(delivery, requeue=requeue, delay=delay)

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        return await self._consumer.extend_lease(delivery, seconds)

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        await self._consumer.dead_letter(delivery, reason=reason, meta=meta)

    # -- inspecting and repairing ---------------------------------------------------

    async def list_queues(self) -> list[str]:
        return await self._inspector.list_queues()

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        return await self._inspector.queue_stats(queues)

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        return await self._inspector.peek(queue, state, limit, offset)

    async def _peek_page(self, queue: str, state: str, limit: int, cursor: str | None) -> MessagePage:
        return await self._inspector.page(queue, state, limit, cursor)

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        return await self._inspector.requeue(queue, ids)

    async def _remove(self, queue: str, ids: set[str]) -> int:
        return await self._inspector.remove(queue, ids)

    async def _purge(self, queue: str) -> int:
        return await self._inspector.purge(queue)

    # -- dead letters ---------------------------------------------------------------

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        return await self._dead.list_page(queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._dead.get(queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        return await self._dead.replay(queue, limit=limit, since=since, delay=delay, dry_run=dry_run, ids=ids,
                                       task=task)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._dead.purge(queue, since=since, limit=limit)


__all__ = ["PostgresBroker"]
