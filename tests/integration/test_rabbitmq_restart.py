"""A RabbitMQ restart mid-run loses nothing that was confirmed.

The test stops and starts the RabbitMQ application (``rabbitmqctl stop_app`` /
``start_app``: the node stays up, every connection drops, durable queues and persistent
messages survive). A producer publishes 1,500 tasks one by one while a consumer acks
them and holds one more delivery unacked across the restart. During the outage a
publish either waits for the reconnection and returns (confirmed) or raises
``BrokerUnavailable`` (then the producer publishes it again); the consumer keeps its
iterator and resumes by itself once aio-pika reconnected. At the end every confirmed
publish was delivered (duplicates are allowed: delivery is at least once), the held
delivery came back (its old receipt settles nothing), and the queue is empty.

It restarts the shared server: never run it beside other RabbitMQ users.
"""

from __future__ import annotations

import asyncio

import pytest

from stem_core import Envelope, connect_broker
from stem_core.errors import BrokerUnavailable, LeaseLost
from tests.specs import require_service, require_tool
from tests.specs.rabbitmq import RABBITMQ_TEST_URL, delete_namespace, rabbitmqctl
from tests.support import eventually

TASKS = 1_500
RESTART_AFTER = 500  # confirmed publishes before the restart
RETRY_WAIT_S = 0.05
DRAIN_DEADLINE_S = 120.0
# A publish waits this long for the server to come back before BrokerUnavailable.
PUBLISH_TIMEOUT_S = 3.0

pytestmark = pytest.mark.slow


async def test_a_restart_loses_no_confirmed_publish_and_consumers_resume(namespace: str) -> None:
    require_service("rabbitmq")
    require_tool("rabbitmqctl")
    url = f"{RABBITMQ_TEST_URL}?publish_timeout={PUBLISH_TIMEOUT_S}&reconnect_interval=0.5"
    producer = await connect_broker(url, namespace=namespace)
    consumer = await connect_broker(url, namespace=namespace)
    held_by_test = await connect_broker(url, namespace=namespace)
    published: set[str] = set()
    delivered: set[str] = set()
    publish_errors = 0
    restarted = asyncio.Event()
    half_way = asyncio.Event()

    # Given one delivery held unacked across the restart
    marker = Envelope(name="restart.held", queue="held")
    await producer.publish(marker)
    holding = held_by_test.consume(["held"])
    held = await asyncio.wait_for(holding.__anext__(), 30)  # type: ignore[attr-defined]

    async def produce() -> None:
        nonlocal publish_errors
        for i in range(TASKS):
            envelope = Envelope(name="restart.task", args={"i": i})
            while True:
                try:
                    await producer.publish(envelope)
                    break
                except BrokerUnavailable:
                    publish_errors += 1  # not confirmed: publish it again
                    await asyncio.sleep(RETRY_WAIT_S)
            published.add(envelope.id)
            if len(published) == RESTART_AFTER:
                half_way.set()

    async def consume() -> None:
        async for delivery in consumer.consume(["default"], prefetch=16):
            delivered.add(delivery.envelope.id)
            await consumer.ack(delivery)  # lost with the connection: redelivered, acked again

    async def restart() -> None:
        await half_way.wait()
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        await asyncio.to_thread(rabbitmqctl, "start_app")
        restarted.set()

    async def drained() -> bool:
        if not published <= delivered:
            return False
        (stats,) = await producer.queue_stats(["default"])
        return stats.pending == stats.delayed == 0

    reader = asyncio.create_task(consume())
    try:
        # When the server restarts while both run
        await asyncio.gather(produce(), restart())
        assert restarted.is_set()
        # Then every confirmed publish is delivered, and nothing is left behind
        await eventually(drained, timeout=DRAIN_DEADLINE_S, message="every confirmed publish delivered")
        assert len(published) == TASKS
        print(f"publish errors during the outage: {publish_errors}")
        # And the delivery held across the restart came back; its old receipt is void
        with pytest.raises(LeaseLost):
            await held_by_test.extend_lease(held, 30)
        await held_by_test.ack(held)  # a no-op: the server took it back with the connection
        again = await asyncio.wait_for(holding.__anext__(), 60)  # type: ignore[attr-defined]
        assert again.envelope.id == marker.id and again.delivery_count == 2
        await held_by_test.ack(again)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await holding.aclose()  # type: ignore[attr-defined]
        for broker in (producer, consumer, held_by_test):
            await broker.close()
        await delete_namespace(RABBITMQ_TEST_URL, namespace)
