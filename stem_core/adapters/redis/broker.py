"""``RedisBroker``: the contract over Redis Streams, every multi-key step one Lua script.

The broker only composes its parts; each module's docstring tells its part of the
design (key layout and each script's KEYS/ARGV are in ``keys.py`` and ``lua/``,
``lib.lua`` first):

* ``publish.py``, ``RedisPublisher``: one stream per (queue, priority band), a ready
  message is a bare ``XADD``; the fused enqueue with a ``RedisBackend`` on this server;
* ``consume.py``, ``RedisConsumer``: claims across the subscription's queues in one
  script, leases as the pending entries list with a deadline ZSET, fenced receipts,
  the idle ``XREAD BLOCK``, settling, and the fused ``ack_with_status`` per event-loop
  turn;
* ``channels.py``, ``RedisChannels``: broadcasts, a stream per channel and a group per
  subscription;
* ``inspect.py``, ``RedisInspector`` and ``dead.py``, ``RedisDeadLetters``: the
  operator's reads and repairs, in bounded steps;
* ``connection.py``, ``RedisConnection``: the client, the packed wire path
  (``wire.py``), the scripts (``scripts.py``), and the one place redis-py errors become
  Stem errors; ``url.py`` parses the URL; ``internals.py`` alone touches redis-py's
  private parts.

The parts are built with the broker and share its ``RedisConnection``; ``connect``
opens the connection, ``close`` finishes the consumer's settles in flight and then
closes the connection. Producers get ``BrokerUnavailable`` when Redis is down (after
the client's retries); consumers keep retrying by themselves and resume when it is back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, MessagePage, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .backend import SharedBackend
from .channels import RedisChannels
from .connection import RedisConnection
from .consume import RedisConsumer
from .dead import RedisDeadLetters
from .inspect import RedisInspector
from .keys import KeyCache, registry_key
from .publish import RedisPublisher
from .url import RedisConfig, parse_url

BROKER_OPTIONS = {"lease_seconds": float}


class RedisBroker(Broker):
    """Redis Streams broker for ``redis://`` and ``rediss://`` URLs."""

    scheme: ClassVar[str] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True, priority=True, broadcast=True, dead_letters=True,
        lease_extension=True, peek=True, durable=True, cross_process=True,
    )

    def __init__(self, config: RedisConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        conn = self._conn = RedisConnection(config, role="broker")
        keys = KeyCache(self.namespace)
        registry = registry_key(self.namespace)
        shared = SharedBackend(config)  # the result backend on this server, for the fused scripts
        channels = self._channels = RedisChannels(conn, self.namespace)
        self._publisher = RedisPublisher(conn, keys, registry, shared)
        self._consumer = RedisConsumer(conn, keys, channels, shared, lease_seconds=self.lease_seconds,
                                       dead_letter_retention=self.dead_letter_retention)
        self._inspector = RedisInspector(conn, keys, registry)
        self._dead = RedisDeadLetters(conn, keys)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "RedisBroker":
        config = parse_url(url, options, BROKER_OPTIONS)
        lease = config.options.get("lease_seconds", DEFAULT_LEASE_SECONDS)
        return cls(config, namespace=namespace, lease_seconds=lease)

    def __repr__(self) -> str:
        return f"RedisBroker({self._conn.shown_url!r}, namespace={self.namespace!r})"

    async def connect(self) -> "RedisBroker":
        await self._conn.open()
        self._consumer.open()
        return self

    async def close(self) -> None:
        await self._consumer.close()
        await self._conn.close()

    async def ping(self) -> None:
        await self._conn.ping()

    # -- producing ------------------------------------------------------------------

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

    # -- operating ------------------------------------------------------------------

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

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        return await self._dead.page(queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._dead.get(queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        return await self._dead.replay(queue, limit=limit, since=since, delay=delay, dry_run=dry_run, ids=ids, task=task)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._dead.purge(queue, since=since, limit=limit)


__all__ = ["RedisBroker"]
