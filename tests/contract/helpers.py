"""Helpers for the contract suite: receiving with a deadline, consumers known to be open,
short leases (waiting for a condition is ``tests.support.eventually``).

Deadlines here only bound a hang; no test asserts how fast something happened, except
where the contract itself promises a bound (redelivery within lease + 1 s), and even
there the wait is generous.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator, Sequence

from stem_core import Broker, Delivery, Envelope, QueueStats
from stem_core.clock import utcnow

# Lease used by tests that let one expire (envelope.visibility_timeout).
SHORT_LEASE_S = 1.0
# How long to keep listening to conclude "nothing is delivered".
QUIET_S = 0.4
# Deadline for something that should happen promptly (a publish reaching an idle consumer).
DELIVERY_DEADLINE_S = 10.0
# The contract: an expired lease is redelivered within lease + 1 s; we allow generous slack.
REDELIVERY_DEADLINE_S = SHORT_LEASE_S + 1.0 + 8.0


# A broker that can peek can also find the messages it does not hold (delayed ones
# included) to requeue, remove or purge them; SQS cannot (it shows a message only by
# handing it out, and hides a delayed one until due).
NOT_ADDRESSABLE = "this broker cannot reach messages it does not hold (no peek), delayed ones included"
NO_AGES = "this broker's stats know no message ages (AdapterSpec.knows_age)"


def addressable(broker: Broker) -> bool:
    return broker.capabilities.peek


def qname(prefix: str = "q") -> str:
    """A fresh queue name (the namespace already isolates tests; this isolates queues)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def env(name: str = "contract.task", **fields: Any) -> Envelope:
    """An envelope with test defaults; ``fields`` override any Envelope field."""
    return Envelope(name=name, **fields)


def delayed_env(seconds: float, **fields: Any) -> Envelope:
    return env(not_before=utcnow() + timedelta(seconds=seconds), **fields)


class Consumer:
    """One open ``consume`` subscription pumped by a background task.

    Deliveries land in an asyncio queue, so a test can wait for "the next one" with a
    deadline without closing the subscription (cancelling ``__anext__`` would).
    """

    def __init__(self, broker: Broker, queues: Sequence[str] | str, *, prefetch: int = 1,
                 consumer: str | None = None, channels: Sequence[str] = (), refill: int = 1) -> None:
        self.broker = broker
        self.iterator = broker.consume(queues, prefetch=prefetch, consumer=consumer, channels=channels, refill=refill)
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self.received: list[Delivery] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for delivery in self.iterator:
                self.received.append(delivery)
                await self.inbox.put(delivery)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced by next(); a test must see adapter errors
            self.error = exc

    async def next(self, timeout: float = DELIVERY_DEADLINE_S) -> Delivery | None:
        """The next delivery, or None when none arrives within ``timeout``."""
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except asyncio.TimeoutError:
            if self.error is not None:
                raise AssertionError(f"consumer failed: {self.error!r}") from self.error
            return None

    async def expect(self, timeout: float = DELIVERY_DEADLINE_S) -> Delivery:
        delivery = await self.next(timeout)
        assert delivery is not None, f"no delivery within {timeout} s"
        return delivery

    async def take(self, n: int, timeout: float = DELIVERY_DEADLINE_S) -> list[Delivery]:
        return [await self.expect(timeout) for _ in range(n)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.iterator.aclose()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def consuming(broker: Broker, queues: Sequence[str] | str, *, ready: bool = False,
                    **options: Any) -> AsyncIterator[Consumer]:
    """A consumer for the ``async with`` block; ``ready``: its subscription is certainly
    open when the block starts (see ``ready_consumer``; ``queues`` is then one queue)."""
    consumer = Consumer(broker, queues, **options)
    try:
        if ready:
            assert isinstance(queues, str), "a ready consumer confirms one queue"
            await _confirm_open(broker, consumer, queues)
        yield consumer
    finally:
        await consumer.close()


async def receive_one(broker: Broker, queues: Sequence[str] | str, timeout: float = DELIVERY_DEADLINE_S,
                      **options: Any) -> Delivery | None:
    """Open a consumer, wait up to ``timeout`` for one delivery, close it (the delivery
    stays leased until settled or expired)."""
    async with consuming(broker, queues, **options) as consumer:
        return await consumer.next(timeout)


async def receive_ids(broker: Broker, queue: str, n: int, timeout: float = DELIVERY_DEADLINE_S, *,
                      ack: bool = True) -> list[str]:
    """Receive ``n`` deliveries one at a time (prefetch 1) and return their envelope ids."""
    ids = []
    async with consuming(broker, queue) as consumer:
        for _ in range(n):
            delivery = await consumer.expect(timeout)
            ids.append(delivery.envelope.id)
            if ack:
                await broker.ack(delivery)
    return ids


async def assert_nothing(broker: Broker, queues: Sequence[str] | str, quiet: float = QUIET_S) -> None:
    """Nothing is delivered from ``queues`` while a consumer listens for ``quiet`` seconds."""
    delivery = await receive_one(broker, queues, timeout=quiet)
    assert delivery is None, f"unexpected delivery {delivery.envelope.id} ({delivery.envelope.name})"


# Figures a broker cannot give exactly, one rule for the suite: an unknown in-flight count
# (None: RabbitMQ without its management API) matches any expected value through
# ``counts``; approximate counts (``QueueStats.approximate``: SQS) compare as they are,
# because the test server (moto) answers them exactly; message ages a broker does not
# know (``AdapterSpec.knows_age`` False: SQS, RabbitMQ) skip the age checks with ``NO_AGES``.
class _Unknown:
    """A figure the broker reports as unknown (None): equal to whatever a test expects."""

    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


def known(value: Any) -> Any:
    """``value``, or ``UNKNOWN`` for a None in-flight count: RabbitMQ cannot know how many
    messages are unacknowledged without its management API (docs/rabbitmq.md)."""
    return UNKNOWN if value is None else value


def counts(stats: QueueStats, *fields: str) -> tuple[Any, ...]:
    """The named figures of ``stats``, a None ``inflight`` as ``UNKNOWN`` (see ``known``);
    every other figure, and a None of any other field, compares as it is."""
    return tuple(known(getattr(stats, f)) if f == "inflight" else getattr(stats, f) for f in fields)


async def stats_of(broker: Broker, queue: str) -> Any:
    (stats,) = await broker.queue_stats([queue])
    return stats


async def ready_consumer(broker: Broker, queue: str, **options: Any) -> Consumer:
    """A consumer on ``queue`` (plus ``channels``) whose subscription is certainly open:
    a marker published to its queue came back through it (and was acked)."""
    consumer = Consumer(broker, queue, **options)
    await _confirm_open(broker, consumer, queue)
    return consumer


async def _confirm_open(broker: Broker, consumer: Consumer, queue: str) -> None:
    # A queued message waits for the subscription, so its arrival proves the subscription
    # (and its broadcast cursor, opened in the same step) exists: no fixed sleep needed.
    marker = env("contract.marker")
    await broker.publish(marker, queue=queue)
    delivery = await consumer.expect()
    assert delivery.envelope.id == marker.id
    await broker.ack(delivery)


__all__ = [
    "Consumer",
    "DELIVERY_DEADLINE_S",
    "NOT_ADDRESSABLE",
    "NO_AGES",
    "QUIET_S",
    "REDELIVERY_DEADLINE_S",
    "SHORT_LEASE_S",
    "UNKNOWN",
    "addressable",
    "assert_nothing",
    "consuming",
    "counts",
    "delayed_env",
    "env",
    "known",
    "qname",
    "ready_consumer",
    "receive_ids",
    "receive_one",
    "stats_of",
]
