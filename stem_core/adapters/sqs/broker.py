"""``SQSBroker``: the ``Broker`` contract on Amazon SQS (and SNS for broadcast).

Composed of parts that each own their state (``docs/adapters.md``): the connection,
the queue registry, the batched calls, the publisher, the lease registry and settling,
the consumer, the broadcast channels, the inspector and the dead letters. Every
``_primitive`` here is a one-line delegation. ``docs/sqs.md`` explains the design:
priority bands, delays, leases and fencing, costs and capabilities.

Capabilities: ``peek`` is false (SQS cannot look at a message without taking it);
``broadcast`` is false on a broker whose SNS is off or unreachable (checked at
connect). Where the contract asks for more than SQS gives, the part says so:
``requeue``/``remove`` reach only deliveries this process holds (``inspect.py``),
``purge`` leaves delayed messages (hidden inside SQS until due), ``queue_stats`` is
approximate and has no oldest-message age, and equal priorities from several queues
are taken in turns rather than strictly oldest first (``consume.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar

from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, Unsupported
from ...settings import DEFAULT_NAMESPACE
from .batch import SQSBatches
from .codec import MAX_BATCH_ENTRIES
from .channels import SQSChannels
from .connection import SQSConnection
from .consume import SQSConsumer
from .dead import SQSDeadLetters
from .inspect import SQSInspector
from .leases import SQSLeases
from .names import SQSNames
from .publish import SQSPublisher
from .queues import SQSQueues
from .url import SQSConfig, parse_sqs_url


@dataclass(frozen=True)
class SQSParts:
    """The parts of one connected broker (closed in reverse order)."""

    batches: SQSBatches
    publisher: SQSPublisher
    leases: SQSLeases
    channels: SQSChannels
    consumer: SQSConsumer
    inspector: SQSInspector
    dead: SQSDeadLetters


class SQSBroker(Broker):
    """Amazon SQS (or any SQS-compatible server) as a Stem broker."""

    scheme: ClassVar[str] = "sqs"
    claim_batch: ClassVar[int] = MAX_BATCH_ENTRIES
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True,
        priority=True,
        broadcast=True,
        dead_letters=True,
        lease_extension=True,
        peek=False,
        durable=True,
        cross_process=True,
    )

    def __init__(self, config: SQSConfig, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        super().__init__(namespace=namespace, lease_seconds=config.lease_seconds)
        self.config = config
        self._conn = SQSConnection(config)
        self.names = SQSNames(config.prefix, self.namespace)
        self._parts: SQSParts | None = None

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "SQSBroker":
        return cls(parse_sqs_url(url, options), namespace=namespace)

    @property
    def requests(self) -> int:
        """SQS and SNS HTTP requests sent so far (retries included): what AWS bills."""
        return self._conn.requests

    @property
    def request_counts(self) -> dict[str, int]:
        return dict(self._conn.by_operation)

    @property
    def broadcast_unavailable(self) -> str | None:
        """Why ``broadcast`` is off, when it is."""
        return self._parts.channels.unavailable if self._parts is not None else None

    async def connect(self) -> "SQSBroker":
        if self._parts is not None:
            return self
        await self._conn.open()
        queues = SQSQueues(self._conn, self.names, dead_letter_retention=self.dead_letter_retention)
        batches = SQSBatches(self._conn)
        publisher = SQSPublisher(queues, batches)
        leases = SQSLeases(queues, batches, publisher)
        channels = SQSChannels(self._conn, queues, batches, wait_seconds=self.config.wait_seconds)
        consumer = SQSConsumer(self._conn, queues, leases, channels, lease_seconds=self.lease_seconds,
                               wait_seconds=self.config.wait_seconds)
        try:
            await self._conn.sqs("list_queues", QueueNamePrefix=self.names.base, MaxResults=1)
            await channels.probe()
        except BaseException:
            await self._conn.close()
            raise
        if channels.unavailable is not None:
            # Per broker, not per class: whether SNS answers is known only now.
            self.capabilities = replace(type(self).capabilities, broadcast=False)  # type: ignore[misc]
        self._parts = SQSParts(batches, publisher, leases, channels, consumer,
                               SQSInspector(self._conn, queues, leases, batches),
                               SQSDeadLetters(self._conn, queues, batches, publisher))
        return self

    async def close(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            await parts.consumer.shutdown()
            await parts.channels.shutdown()
            await parts.batches.drain()
        await self._conn.close()

    @property
    def parts(self) -> SQSParts:
        if self._parts is None:
            raise BrokerUnavailable(f"the SQS broker for {self.config.shown_url} is not connected")
        return self._parts

    async def ping(self) -> None:
        await self._conn.sqs("list_queues", QueueNamePrefix=self.names.base, MaxResults=1)

    # -- primitives: one line each --------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        await self.parts.publisher.publish(envelopes)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        await self.parts.channels.broadcast(channel, envelope)

    async def _open_subscription(self, sub: Subscription) -> None:
        await self.parts.consumer.open(sub)

    async def _close_subscription(self, sub: Subscription) -> None:
        await self.parts.consumer.close(sub)

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        return await self.parts.consumer.receive(sub, limit, timeout)

    async def _unclaim(self, deliveries: list[Delivery]) -> None:
        await asyncio.gather(*(self.parts.leases.unclaim(d) for d in deliveries))

    async def _ack(self, delivery: Delivery) -> None:
        if delivery.channel is None:
            await self.parts.leases.ack(delivery)

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        if delivery.channel is None:
            await self.parts.leases.nack(delivery, self.requeued_envelope(delivery.envelope, delay) if requeue else None)

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        return await self.parts.leases.extend(delivery, seconds)

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        if delivery.channel is None:
            await self.parts.leases.dead_letter(delivery, reason, meta)

    async def list_queues(self) -> list[str]:
        return await self.parts.inspector.list_queues()

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        return await self.parts.inspector.queue_stats(queues)

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        raise Unsupported("the sqs broker cannot peek at messages: SQS shows a message only by taking it")

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        return await self.parts.inspector.requeue(queue, ids)

    async def _remove(self, queue: str, ids: set[str]) -> int:
        return await self.parts.inspector.remove(queue, ids)

    async def _purge(self, queue: str) -> int:
        return await self.parts.inspector.purge(queue)

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        return await self.parts.dead.list(queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self.parts.dead.get(queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        return await self.parts.dead.replay(queue, limit=limit, since=since, delay=delay, dry_run=dry_run, ids=ids,
                                          task=task)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self.parts.dead.purge(queue, since=since, limit=limit)


__all__ = ["SQSBroker"]
