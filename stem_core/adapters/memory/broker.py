"""``MemoryBroker``: the executable spec of every rule in ``stem_core.contract.broker``, and
the reference shape of a broker adapter (``docs/adapters.md``): start a new adapter from a
copy of this file.

Single process only (``durable=False``, ``cross_process=False``); everything else the
contract promises is here: priority across queues, delays, leases with true extension and
redelivery, receipt fencing, broadcast fan-out, dead letters and O(1) queue counters.

The broker holds its parts and delegates each primitive to one of them in one line; the
parts do the work and never see the broker. ``__init__.py`` maps the parts to the recipe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, MessagePage, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .channels import MemoryChannels
from .connection import MemoryConnection
from .consume import MemoryConsumer
from .dead import MemoryDeadLetters
from .inspect import MemoryInspector
from .publish import MemoryPublisher
from .registry import store_for
from .store import MemoryStore
from .url import parse_memory_url

BROKER_OPTIONS = frozenset({"lease_seconds"})


class MemoryBroker(Broker):
    """In-process broker over a store shared by every broker on the same ``memory://NAME``."""

    scheme: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True,
        priority=True,
        broadcast=True,
        dead_letters=True,
        lease_extension=True,
        peek=True,
        durable=False,
        cross_process=False,
    )

    def __init__(self, store: MemoryStore, *, name: str = "default", namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self.name = name
        # The parts open nothing by themselves, so they are built here and an unconnected
        # broker is complete; connect() opens the connection they share.
        self._connection = MemoryConnection(store, name)
        self._publisher = MemoryPublisher(self._connection)
        self._channels = MemoryChannels(self._connection)
        self._consumer = MemoryConsumer(self._connection, self._channels, self.lease_for,
                                        dead_letter_retention=self.dead_letter_retention)
        self._inspector = MemoryInspector(self._connection)
        self._dead_letters = MemoryDeadLetters(self._connection)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "MemoryBroker":
        config = parse_memory_url(url, options, BROKER_OPTIONS)
        store = store_for("broker", config.name, namespace, MemoryStore)
        return cls(store, name=config.name, namespace=namespace, **config.options)

    async def connect(self) -> "MemoryBroker":
        await self._connection.open()
        return self

    async def close(self) -> None:
        await self._connection.close()
        # Only now, so that waiting consumers wake to find the connection closed and raise
        # BrokerUnavailable (woken earlier, they would go back to waiting).
        self._consumer.wake_all()

    # -- producing ------------------------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        await self._publisher.publish(envelopes)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        await self._channels.broadcast(channel, envelope)

    # -- consuming ------------------------------------------------------------------

    async def _open_subscription(self, sub: Subscription) -> None:
        await self._consumer.open_subscription(sub)

    async def _close_subscription(self, sub: Subscription) -> None:
        await self._consumer.close_subscription(sub)

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        return await self._consumer.receive(sub, limit, timeout)

    async def _unclaim(self, deliveries: list[Delivery]) -> None:
        await self._consumer.unclaim(deliveries)

    # -- settling -------------------------------------------------------------------

    async def _ack(self, delivery: Delivery) -> None:
        await self._consumer.ack(delivery)

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
        return await self._dead_letters.page(queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._dead_letters.get(queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        return await self._dead_letters.replay(queue, limit=limit, since=since, delay=delay, dry_run=dry_run,
                                               ids=ids, task=task)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._dead_letters.purge(queue, since=since, limit=limit)


__all__ = ["BROKER_OPTIONS", "MemoryBroker"]
