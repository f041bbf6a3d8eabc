"""What only the in-memory adapter promises: ``memory://NAME`` stores shared within a
process, namespaces kept apart, options checked, and wake-ups across threads and loops.
(The contract itself is checked for it by the parametrised suite beside this file.)"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Iterator

import pytest

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.adapters.memory import MemoryBroker, drop_stores
from stem_core.adapters.memory.store import MemoryStore
from stem_core.errors import BrokerUnavailable, ConfigurationError
from tests.support import eventually

from .helpers import consuming, qname, stats_of


@pytest.fixture
def store_name() -> Iterator[str]:
    name = "unit-" + uuid.uuid4().hex[:8]
    yield name
    drop_stores(name)


async def test_brokers_on_one_name_share_a_store(store_name: str) -> None:
    producer = await connect_broker(f"memory://{store_name}", namespace="ns1")
    worker = await connect_broker(f"memory://{store_name}", namespace="ns1")
    stranger = await connect_broker(f"memory://{store_name}-other", namespace="ns1")
    other_ns = await connect_broker(f"memory://{store_name}", namespace="ns2")
    queue = qname()
    await producer.publish(Envelope(name="t", queue=queue))
    assert (await stats_of(worker, queue)).pending == 1
    assert (await stats_of(stranger, queue)).pending == 0
    assert (await stats_of(other_ns, queue)).pending == 0
    for broker in (producer, worker, stranger, other_ns):
        await broker.close()
    drop_stores(f"{store_name}-other")


async def test_the_store_outlives_its_brokers_until_dropped(store_name: str) -> None:
    queue = qname()
    async with await connect_broker(f"memory://{store_name}") as first:
        await first.publish(Envelope(name="t", queue=queue))
    async with await connect_broker(f"memory://{store_name}") as second:
        assert (await stats_of(second, queue)).pending == 1
    assert drop_stores(store_name) == 1
    async with await connect_broker(f"memory://{store_name}") as third:
        assert (await stats_of(third, queue)).pending == 0


async def test_backends_on_one_name_share_a_store(store_name: str) -> None:
    writer = await connect_backend(f"memory://{store_name}")
    reader = await connect_backend(f"memory://{store_name}")
    await writer.set_status("t1", "running")
    status = await reader.get_status("t1")
    assert status is not None and status.state.value == "running"
    await writer.close()
    await reader.close()


async def test_bare_memory_url_is_the_default_store() -> None:
    broker = MemoryBroker.from_url("memory://")
    assert broker.name == "default"
    assert MemoryBroker.from_url("memory:///").name == "default"


@pytest.mark.parametrize(
    "url, options",
    [
        ("memory://x?nope=1", {}),
        ("memory://x", {"nope": 1}),
        ("memory://x?lease_seconds=abc", {}),
        ("memory://x", {"lease_seconds": "5"}),
        ("memory://x", {"lease_seconds": 0}),
        ("memory://bad name", {}),
    ],
)
def test_bad_urls_and_options_are_configuration_errors(url: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryBroker.from_url(url, **options)


async def test_lease_seconds_from_the_url(store_name: str) -> None:
    broker = await connect_broker(f"memory://{store_name}?lease_seconds=7.5")
    queue = qname()
    await broker.publish(Envelope(name="t", queue=queue))
    async with consuming(broker, queue) as consumer:
        delivery = await consumer.expect()
    assert broker.lease_seconds == 7.5
    assert delivery.lease_expires_at is not None
    await broker.close()


async def test_a_publish_from_another_thread_wakes_an_idle_consumer(store_name: str) -> None:
    # Given an idle consumer on this loop
    broker = await connect_broker(f"memory://{store_name}")
    queue = qname()
    async with consuming(broker, queue) as consumer:
        assert await consumer.next(0.2) is None
        sent = Envelope(name="t", queue=queue)

        # When another thread, with its own event loop and broker, publishes
        def publish() -> None:
            async def go() -> None:
                async with await connect_broker(f"memory://{store_name}") as other:
                    await other.publish(sent)

            asyncio.run(go())

        thread = threading.Thread(target=publish)
        thread.start()
        await asyncio.to_thread(thread.join)
        # Then the consumer here gets it
        delivery = await consumer.expect()
        assert delivery.envelope.id == sent.id
        await broker.ack(delivery)
    await broker.close()


async def test_closing_a_broker_ends_its_waiting_consumers() -> None:
    # Given a consumer waiting on an empty queue (seen waiting in the store: its waker is set)
    store = MemoryStore()
    broker = MemoryBroker(store)
    queue = qname()
    deliveries = broker.consume(queue)
    waiting = asyncio.create_task(deliveries.__anext__())
    await eventually(lambda: any(sub.wake is not None for sub in store.by_queue.get(queue, ())))
    # When the broker closes
    await broker.close()
    # Then the consumer ends with BrokerUnavailable, and so does a later publish
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(BrokerUnavailable):
        await broker.publish(Envelope(name="t"))


async def test_deliveries_claimed_but_not_handed_out_go_back_uncounted(store_name: str) -> None:
    broker = await connect_broker(f"memory://{store_name}")
    queue = qname()
    await broker.publish_many([Envelope(name="t", queue=queue, visibility_timeout=60) for _ in range(3)])
    deliveries = broker.consume(queue, prefetch=3)
    await asyncio.wait_for(anext(deliveries), 10)  # type: ignore[arg-type]
    await deliveries.aclose()  # type: ignore[attr-defined]
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.inflight) == (2, 1)
    async with consuming(broker, queue, prefetch=2) as consumer:
        assert [d.delivery_count for d in await consumer.take(2)] == [1, 1]
    await broker.close()
