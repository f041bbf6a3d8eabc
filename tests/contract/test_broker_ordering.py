"""Broker contract: priority, multi-queue subscriptions and the prefetch cap (the
original's case 15, plus what it did not have: several queues per subscription and a
prefetch that really bounds in-flight work)."""

from __future__ import annotations

import pytest

from stem_core import Broker
from tests.specs import AdapterSpec

from .helpers import QUIET_S, consuming, counts, delayed_env, env, known, qname, stats_of

pytestmark = pytest.mark.usefixtures("needs_priority")


@pytest.fixture
def needs_priority(broker: Broker) -> None:
    if not broker.capabilities.priority:
        pytest.skip("this broker does not order by priority")


async def test_higher_priority_is_delivered_first(broker: Broker) -> None:
    queue = qname()
    low, high = env(queue=queue), env(queue=queue)
    await broker.publish(low, priority=1)
    await broker.publish(high, priority=9)
    async with consuming(broker, queue, prefetch=2) as consumer:
        first, second = await consumer.take(2)
    assert [first.envelope.id, second.envelope.id] == [high.id, low.id]


async def test_priority_then_oldest_within_a_queue(broker: Broker) -> None:
    queue = qname()
    priorities = [3, 0, 9, 3, 5, 0, 9, 1, 5, 3]
    sent = [env(queue=queue, priority=p) for p in priorities]
    await broker.publish_many(sent)
    # Order is fixed by publish time; one at a time so nothing races
    expected = [e.id for e in sorted(sent, key=lambda e: -e.priority)]  # stable: oldest first among equals
    async with consuming(broker, queue) as consumer:
        got = []
        for _ in sent:
            delivery = await consumer.expect()
            got.append(delivery.envelope.id)
            await broker.ack(delivery)
    assert got == expected


async def test_one_subscription_spans_queues_with_priority_across_them(broker: Broker) -> None:
    queue_a, queue_b = qname("a"), qname("b")
    a_low, b_mid, a_high = env(queue=queue_a, priority=1), env(queue=queue_b, priority=5), env(queue=queue_a, priority=9)
    await broker.publish_many([a_low, b_mid, a_high])
    async with consuming(broker, [queue_a, queue_b]) as consumer:
        got = []
        for _ in range(3):
            delivery = await consumer.expect()
            got.append((delivery.envelope.id, delivery.queue))
            await broker.ack(delivery)
    assert got == [(a_high.id, queue_a), (b_mid.id, queue_b), (a_low.id, queue_a)]


async def test_equal_priority_across_queues_is_oldest_first(broker: Broker, broker_spec: AdapterSpec) -> None:
    if not broker_spec.oldest_first:
        pytest.skip("this broker takes equal priorities from several queues in turns, not oldest first")
    queue_a, queue_b = qname("a"), qname("b")
    first, second, third = env(queue=queue_a), env(queue=queue_b), env(queue=queue_a)
    for e in (first, second, third):
        await broker.publish(e)
    async with consuming(broker, [queue_b, queue_a]) as consumer:
        got = []
        for _ in range(3):
            delivery = await consumer.expect()
            got.append(delivery.envelope.id)
            await broker.ack(delivery)
    assert got == [first.id, second.id, third.id]


async def test_a_multi_queue_consumer_wakes_for_any_of_its_queues(broker: Broker) -> None:
    queue_a, queue_b = qname("a"), qname("b")
    async with consuming(broker, [queue_a, queue_b]) as consumer:
        assert await consumer.next(QUIET_S) is None
        sent = env(queue=queue_b)
        await broker.publish(sent)
        delivery = await consumer.expect()
        assert (delivery.envelope.id, delivery.queue) == (sent.id, queue_b)
        await broker.ack(delivery)


async def test_delayed_high_priority_does_not_jump_ahead_of_its_time(broker: Broker) -> None:
    queue = qname()
    later = delayed_env(3600, queue=queue, priority=9)
    now = env(queue=queue, priority=0)
    await broker.publish_many([later, now])
    async with consuming(broker, queue) as consumer:
        delivery = await consumer.expect()
        assert delivery.envelope.id == now.id
        await broker.ack(delivery)
        assert await consumer.next(QUIET_S) is None


async def test_refill_claims_again_only_once_that_many_slots_are_free(broker: Broker) -> None:
    # Given a consumer with prefetch 4 and refill 2 holding 4 deliveries of 8
    queue = qname()
    await broker.publish_many([env(queue=queue) for _ in range(8)])
    async with consuming(broker, queue, prefetch=4, refill=2) as consumer:
        held = await consumer.take(4)
        # When one is acked, then nothing more is claimed (one slot free, refill 2)
        await broker.ack(held.pop(0))
        assert await consumer.next(QUIET_S) is None
        assert known((await stats_of(broker, queue)).inflight) == 3
        # When a second is acked, then the freed slots fill again
        await broker.ack(held.pop(0))
        held += await consumer.take(2)
        assert known((await stats_of(broker, queue)).inflight) == 4
        # And a consumer holding nothing always claims, whatever its refill
        for delivery in held:
            await broker.ack(delivery)
        held = await consumer.take(2)
        assert await consumer.next(QUIET_S) is None
        for delivery in held:
            await broker.ack(delivery)


@pytest.mark.parametrize("refill", [0, 5, True, "2"])
async def test_refill_outside_one_to_prefetch_is_rejected(broker: Broker, refill: object) -> None:
    with pytest.raises(ValueError, match="refill"):
        broker.consume(qname(), prefetch=4, refill=refill)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefetch", [1, 3])
async def test_prefetch_caps_unacknowledged_deliveries(broker: Broker, prefetch: int) -> None:
    # Given more messages than the consumer may hold
    queue = qname()
    total = prefetch + 3
    await broker.publish_many([env(queue=queue) for _ in range(total)])
    async with consuming(broker, queue, prefetch=prefetch) as consumer:
        held = await consumer.take(prefetch)
        # Then it holds exactly `prefetch` and no more arrive while none is acked
        assert await consumer.next(QUIET_S) is None
        stats = await stats_of(broker, queue)
        assert counts(stats, "pending", "inflight") == (total - prefetch, prefetch)
        # When one is acked, exactly one slot frees
        await broker.ack(held.pop(0))
        held.append(await consumer.expect())
        assert await consumer.next(QUIET_S) is None
        assert known((await stats_of(broker, queue)).inflight) == prefetch
        taken = prefetch + 1
        # Nacks and dead letters free slots too
        await broker.nack(held.pop(0), requeue=False)
        if not held:
            held.append(await consumer.expect())
            taken += 1
        await broker.dead_letter(held.pop(0), reason="contract")
        for _ in range(total - taken):
            held.append(await consumer.expect())
        assert await consumer.next(QUIET_S) is None
        for delivery in held:
            await broker.ack(delivery)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight", "dead") == (0, 0, 1)
