"""Broker contract: publish, consume, settle (ports of the original suite's cases 1-5, 10,
11 and 14, asserting what the original only polled)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from stem_core import Broker
from stem_core.clock import utcnow
from tests.specs import AdapterSpec
from tests.support import eventually

from .helpers import (
    DELIVERY_DEADLINE_S,
    NOT_ADDRESSABLE,
    QUIET_S,
    addressable,
    assert_nothing,
    consuming,
    counts,
    delayed_env,
    env,
    qname,
    receive_one,
    stats_of,
)


async def test_publish_consume_ack_removes_the_job(broker: Broker) -> None:
    # Given one published envelope
    queue = qname()
    sent = env(queue=queue, args={"n": 1}, headers={"h": "v"}, meta={"m": [1, 2]}, max_retries=3)
    await broker.publish(sent)
    # When a consumer receives and acks it
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    assert delivery.envelope.to_dict() == sent.to_dict()
    assert (delivery.queue, delivery.channel, delivery.delivery_count) == (queue, None, 1)
    assert delivery.lease_expires_at is not None
    await broker.ack(delivery)
    # Then it is never delivered again and nothing is counted anywhere
    await assert_nothing(broker, queue)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight", "dead") == (0, 0, 0, 0)


async def test_publish_respects_queue_and_priority_overrides(broker: Broker) -> None:
    queue_a, queue_b = qname("a"), qname("b")
    sent = env(queue=queue_a, priority=1)
    await broker.publish(sent, queue=queue_b, priority=7)
    delivery = await receive_one(broker, queue_b)
    assert delivery is not None and delivery.envelope.id == sent.id
    # The stored envelope carries the effective values
    assert (delivery.envelope.queue, delivery.envelope.priority, delivery.queue) == (queue_b, 7, queue_b)
    await broker.ack(delivery)
    await assert_nothing(broker, queue_a)


async def test_counts_track_the_delivery_lifecycle(broker: Broker) -> None:
    queue = qname()
    await broker.publish(env(queue=queue))
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight") == (1, 0, 0)
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight") == (0, 0, 1)
    assert stats.oldest_pending_age is None
    await broker.ack(delivery)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight") == (0, 0, 0)
    # Totals, where kept, count publishes and acks only
    if stats.enqueued_total is not None:
        assert stats.enqueued_total == 1
    if stats.completed_total is not None:
        assert stats.completed_total == 1


async def test_nack_with_requeue_redelivers_with_attempt_plus_one(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue, attempt=0)
    await broker.publish(sent)
    async with consuming(broker, queue) as consumer:
        first = await consumer.expect()
        await broker.nack(first)
        again = await consumer.expect()
        assert again.envelope.id == sent.id
        assert again.envelope.attempt == 1
        assert again.delivery_count >= 1
        await broker.ack(again)
    await assert_nothing(broker, queue)


async def test_nack_with_delay_keeps_the_message_delayed(broker: Broker) -> None:
    queue = qname()
    await broker.publish(env(queue=queue))
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    before = utcnow()
    await broker.nack(delivery, delay=60)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight") == (0, 1, 0)
    if broker.capabilities.peek:  # without peek the delayed copy cannot be looked at
        (info,) = await broker.peek(queue, state="delayed")
        assert info.envelope.id == delivery.envelope.id and info.envelope.attempt == 1
        assert info.envelope.not_before is not None
        assert info.envelope.not_before >= before + timedelta(seconds=59)
    await assert_nothing(broker, queue)


async def test_nack_without_requeue_drops_the_job(broker: Broker) -> None:
    queue = qname()
    await broker.publish(env(queue=queue))
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    await broker.nack(delivery, requeue=False)
    await assert_nothing(broker, queue)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight", "dead") == (0, 0, 0, 0)


async def test_concurrent_subscriptions_do_not_block_publish(broker: Broker) -> None:
    queue_a, queue_b = qname("a"), qname("b")
    # Given two consumers whose subscriptions are open and, their markers taken, idle
    async with consuming(broker, queue_a, ready=True) as on_a, consuming(broker, queue_b, ready=True) as on_b:
        # When a message is published to one of them
        sent = env(queue=queue_b)
        # Then the waiting consumers do not hold the publish up, and only its consumer gets it
        await asyncio.wait_for(broker.publish(sent), 10)
        delivery = await on_b.expect()
        assert delivery.envelope.id == sent.id
        await broker.ack(delivery)
        assert await on_a.next(QUIET_S) is None


async def test_purge_removes_pending_and_delayed_but_not_inflight_or_dead(broker: Broker) -> None:
    if not addressable(broker):
        pytest.skip(NOT_ADDRESSABLE)
    # Given one dead letter, one leased, two pending and one delayed message
    queue = qname()
    await broker.publish(env(queue=queue, name="to.dead"))
    doomed = await receive_one(broker, queue)
    assert doomed is not None
    await broker.dead_letter(doomed, reason="contract")
    await broker.publish_many([env(queue=queue) for _ in range(3)])
    await broker.publish(delayed_env(60, queue=queue))
    held = await receive_one(broker, queue)
    assert held is not None
    # When the queue is purged, then 2 pending + 1 delayed go; the lease and the dead letter stay
    assert await broker.purge(queue) == 3
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight", "dead") == (0, 0, 1, 1)
    assert await broker.purge(queue) == 0
    await broker.ack(held)
    assert await broker.purge_dead_letters(queue) == 1
    assert await broker.purge_dead_letters(queue) == 0


async def test_delayed_job_is_invisible_until_not_before(broker: Broker) -> None:
    queue = qname()
    sent = delayed_env(1.0, queue=queue)
    await broker.publish(sent)
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.delayed) == (0, 1)
    assert stats.oldest_pending_age is None  # delayed messages do not count
    async with consuming(broker, queue) as consumer:
        delivery = await consumer.expect()
    assert delivery.envelope.id == sent.id
    assert sent.not_before is not None and utcnow() >= sent.not_before
    await broker.ack(delivery)


async def test_delayed_job_becomes_pending_in_stats(broker: Broker, broker_spec: AdapterSpec) -> None:
    queue = qname()
    await broker.publish(delayed_env(0.5, queue=queue))
    stats = await eventually(
        lambda: _pending_now(broker, queue), timeout=DELIVERY_DEADLINE_S, message="the delayed message to become pending"
    )
    assert stats.delayed == 0
    if broker_spec.knows_age:
        assert stats.oldest_pending_age is not None and stats.oldest_pending_age >= 0


async def _pending_now(broker: Broker, queue: str) -> object:
    stats = await stats_of(broker, queue)
    return stats if stats.pending == 1 else None
