"""``SQLiteBroker``: the embedded default broker, durable and shared by every process on
one machine through one database file.

The broker holds its parts (``__init__.py`` maps them to ``docs/adapters.md``) and
delegates each primitive to one of them in one line. How each works is described where it
lives: waiting and claiming in ``consume.py``, connections, the database thread and group
commit in ``db.py``, tables and counters in ``migrations/0001_broker.sql``, fencing in
``jobs.py``, broadcasts in ``broadcasts.py``, operator actions in ``repair.py``.

With a SQLite result backend open on the same file in this process, the two share one
connection (``db.Link``), so ``Broker.enqueue`` and ``Broker.ack_with_status`` write the
statuses and the jobs in one transaction; with a backend anywhere else they take the two
separate steps.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, MessagePage, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .channels import SQLiteChannels
from .consume import SQLiteConsumer
from .db import SQLiteDatabase
from .dead import SQLiteDeadLetters
from .inspect import SQLiteInspector
from .publish import SQLitePublisher
from .url import BUSY_TIMEOUT_S, POLL_INTERVAL_S, parse_sqlite_url

BROKER_OPTIONS = frozenset({"lease_seconds", "busy_timeout", "poll_interval"})


class SQLiteBroker(Broker):
    """Broker over one SQLite file (WAL); see the module docstring and ``__init__.py``."""

    scheme: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True,
        priority=True,
        broadcast=True,
        dead_letters=True,
        lease_extension=True,
        peek=True,
        durable=True,
        cross_process=True,
    )

    def __init__(
        self,
        path: Path,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        busy_timeout: float = BUSY_TIMEOUT_S,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self.path = path
        # The parts open nothing by themselves, so they are built here: an unconnected
        # broker works, its database opening on first use (see SQLiteDatabase.submit).
        self._db = SQLiteDatabase(path, busy_timeout_s=busy_timeout, unavailable=BrokerUnavailable, label="broker",
                                  poll_interval=poll_interval)
        self._publisher = SQLitePublisher(self._db, self.namespace)
        self._channels = SQLiteChannels(self._db, self.namespace)
        self._consumer = SQLiteConsumer(self._db, self.namespace, self._channels, lease_seconds=self.lease_seconds,
                                        poll_interval=poll_interval, dead_letter_retention=self.dead_letter_retention)
        self._inspector = SQLiteInspector(self._db, self.namespace)
        self._dead_letters = SQLiteDeadLetters(self._db, self.namespace)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "SQLiteBroker":
        config = parse_sqlite_url(url, options, BROKER_OPTIONS)
        return cls(config.path, namespace=namespace, **config.options)

    async def connect(self) -> "SQLiteBroker":
        await self._db.open()
        return self

    async def close(self) -> None:
        # Waiting consumers wake (the database rings its doorbell), find it closed and
        # raise BrokerUnavailable; the parts hold nothing else to close.
        await self._db.close()

    # -- producing ------------------------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        await self._publisher.publish(envelopes)

    async def _enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        return await self._publisher.enqueue(backend, envelopes, writes)

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
        return await self._dead_letters.page(queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._dead_letters.get(queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        return await self._dead_letters.replay(queue, limit=limit, since=since, delay=delay, dry_run=dry_run,
                                               ids=ids, task=task)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._dead_letters.purge(queue, since=since, limit=limit)


__all__ = ["BROKER_OPTIONS", "SQLiteBroker"]
