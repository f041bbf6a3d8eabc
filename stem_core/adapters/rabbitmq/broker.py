"""``RabbitMQBroker``: the contract over AMQP 0-9-1 (RabbitMQ 3.10+, no plugins needed).

The parts, each owning its state (docs/adapters.md; the details are in each module):
``RabbitMQConnection`` (aio-pika robust connection, error translation),
``RabbitMQTopology`` (idempotent declarations), ``RabbitMQPublisher`` (publisher
confirms), ``RabbitMQLeases`` (leases as unacked deliveries, fencing, expiry),
``RabbitMQConsumer`` (subscriptions, receive, settle), ``RabbitMQChannels``
(broadcast), ``RabbitMQInspector`` (stats, requeue, remove, purge),
``RabbitMQDeadLetters`` and ``RabbitMQManagement`` (the optional HTTP API). The server
layout and the delay levels are in ``names.py``; docs/rabbitmq.md explains the design.

Capabilities: everything but ``peek``. AMQP can show a message only by delivering it,
so a peek would take messages from the workers and give them back out of order and
marked redelivered; the operator views that need it say so instead. ``inflight`` is
None in ``queue_stats`` unless the management API is configured.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any, ClassVar

from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...errors import Unsupported
from ...settings import DEFAULT_NAMESPACE
from .channels import RabbitMQChannels
from .connection import RabbitMQConnection
from .consume import RabbitMQConsumer
from .dead import RabbitMQDeadLetters
from .inspect import RabbitMQInspector
from .leases import RabbitMQLeases
from .management import RabbitMQManagement
from .names import RabbitMQNames
from .publish import RabbitMQPublisher
from .topology import RabbitMQTopology
from .url import RabbitMQConfig, parse_url

PEEK_UNSUPPORTED = ("the amqp broker cannot peek: AMQP shows a message only by delivering it, which would take it "
                    "from the workers and give it back out of order")


class RabbitMQBroker(Broker):
    """RabbitMQ broker for ``amqp://`` and ``amqps://`` URLs."""

    scheme: ClassVar[str] = "amqp"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True, priority=True, broadcast=True, dead_letters=True,
        lease_extension=True, peek=False, durable=True, cross_process=True,
    )

    def __init__(self, config: RabbitMQConfig, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        super().__init__(namespace=namespace, lease_seconds=config.lease_seconds)
        self.config = config
        names = RabbitMQNames(self.namespace)
        self._conn = RabbitMQConnection(config, name=f"stem {self.namespace} {socket.gethostname()}-{os.getpid()}")
        topology = RabbitMQTopology(self._conn, names)
        self._publisher = RabbitMQPublisher(self._conn, names, topology, config)
        self._leases = RabbitMQLeases(self._conn, names, self._publisher, self.lease_for)
        self._channels = RabbitMQChannels(names, topology, self._publisher)
        self._consumer = RabbitMQConsumer(self._conn, names, topology, self._publisher, self._leases, self._channels)
        management = (RabbitMQManagement(config.management_url, config.vhost, config.user, config.password)
                      if config.management_url else None)
        self._inspector = RabbitMQInspector(self._conn, names, topology, self._publisher, self._leases, management,
                                            management_counts=config.management_counts)
        self._dead = RabbitMQDeadLetters(self._conn, names, self._publisher)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "RabbitMQBroker":
        return cls(parse_url(url, options), namespace=namespace)

    async def connect(self) -> "RabbitMQBroker":
        await self._conn.open()
        return self

    async def close(self) -> None:
        await self._consumer.close_all()
        await self._leases.stop()
        await self._conn.close()

    async def ping(self) -> None:
        await self._conn.ping()

    # -- producing ------------------------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        await self._publisher.publish(envelopes)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        await self._channels.broadcast(channel, envelope)

    # -- consuming ------------------------------------------------------------------

    async def _open_subscription(self, sub: Subscription) -> None:
        await self._consumer.open(sub)

    async def _close_subscription(self, sub: Subscription) -> None:
        await self._consumer.close(sub)

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        return await self._consumer.receive(sub, limit, timeout)

    async def _unclaim(self, deliveries: list[Delivery]) -> None:
        await self._consumer.unclaim(deliveries)

    async def _ack(self, delivery: Delivery) -> None:
        await self._consumer.ack(delivery)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        await self._consumer.nack(delivery, self.requeued_envelope(delivery.envelope, delay) if requeue else None)

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        return self._consumer.extend(delivery, seconds)

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        await self._consumer.dead_letter(delivery, reason, meta)
        if delivery.channel is None:  # a channel message is not dead-lettered
            await self._dead.prune(delivery.queue, self.dead_letter_retention)

    # -- inspecting and repairing ---------------------------------------------------

    async def list_queues(self) -> list[str]:
        return await self._inspector.list_queues()

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        return await self._inspector.queue_stats(queues)

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        raise Unsupported(PEEK_UNSUPPORTED)

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        return await self._inspector.requeue(queue, ids)

    async def _remove(self, queue: str, ids: set[str]) -> int:
        return await self._inspector.remove(queue, ids)

    async def _purge(self, queue: str) -> int:
        return await self._inspector.purge(queue)

    # -- dead letters ---------------------------------------------------------------

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        return await self._dead.list(queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._dead.get(queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        return await self._dead.replay(queue, limit=limit, since=since, delay=delay, dry_run=dry_run, ids=ids, task=task)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._dead.purge(queue, since=since, limit=limit)


__all__ = ["PEEK_UNSUPPORTED", "RabbitMQBroker"]
