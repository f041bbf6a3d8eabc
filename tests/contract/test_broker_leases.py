"""Broker contract: leases, redelivery, extension and receipt fencing (ports of the
original suite's cases 12 and 13, plus the fencing rules it never checked)."""

from __future__ import annotations

import asyncio

import pytest

from stem_core import Broker
from stem_core.clock import utcnow
from stem_core.errors import LeaseLost
from tests.support import eventually

from .helpers import (
    DELIVERY_DEADLINE_S,
    NOT_ADDRESSABLE,
    QUIET_S,
    REDELIVERY_DEADLINE_S,
    SHORT_LEASE_S,
    addressable,
    assert_nothing,
    consuming,
    counts,
    delayed_env,
    env,
    known,
    qname,
    ready_consumer,
    receive_one,
    stats_of,
)

# Longer than any deadline below: a message that comes back did not wait for its lease.
LONG_LEASE_S = 60.0


async def test_unacked_job_is_redelivered_after_its_lease_expires(broker: Broker) -> None:
    # Given a delivery whose consumer went away without settling it
    queue = qname()
    sent = env(queue=queue, visibility_timeout=SHORT_LEASE_S)
    await broker.publish(sent)
    first = await receive_one(broker, queue)
    assert first is not None and first.delivery_count == 1
    assert first.lease_expires_at is not None and first.lease_expires_at > utcnow()
    # When the lease runs out, then an idle consumer gets it again, counted, attempt unchanged
    again = await receive_one(broker, queue, timeout=REDELIVERY_DEADLINE_S)
    assert again is not None and again.envelope.id == sent.id
    assert again.delivery_count == 2
    assert again.envelope.attempt == 0
    assert again.receipt != first.receipt
    await broker.ack(again)
    await assert_nothing(broker, queue)


async def test_idle_waiting_consumer_gets_the_expired_lease(broker: Broker) -> None:
    # The consumer is already waiting when the lease expires: nobody else calls anything.
    queue = qname()
    await broker.publish(env(queue=queue, visibility_timeout=SHORT_LEASE_S))
    first = await receive_one(broker, queue)
    assert first is not None
    async with consuming(broker, queue) as waiting:
        again = await waiting.expect(REDELIVERY_DEADLINE_S)
    assert again.envelope.id == first.envelope.id and again.delivery_count == 2
    await broker.ack(again)


async def test_extend_lease_delays_redelivery_until_the_new_deadline(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue, visibility_timeout=SHORT_LEASE_S)
    await broker.publish(sent)
    first = await receive_one(broker, queue)
    assert first is not None
    deadline = await broker.extend_lease(first, SHORT_LEASE_S * 4)
    assert deadline > first.lease_expires_at
    # Past the original lease, nobody gets it
    await assert_nothing(broker, queue, quiet=SHORT_LEASE_S * 1.5)
    # After the extended deadline it comes back, once
    again = await receive_one(broker, queue, timeout=SHORT_LEASE_S * 4 + REDELIVERY_DEADLINE_S)
    assert again is not None and again.envelope.id == sent.id and again.delivery_count == 2
    await broker.ack(again)


async def test_extending_a_lease_never_duplicates_the_message(broker: Broker) -> None:
    # Given one holder that keeps renewing a short lease for well past its length
    queue = qname()
    sent = env(queue=queue, visibility_timeout=SHORT_LEASE_S)
    await broker.publish(sent)
    # The rival subscribes once the holder has the message: which of two consumers that
    # open together gets a message is up to the broker (RabbitMQ pushes to either).
    async with consuming(broker, queue) as holder:
        held = await holder.expect()
        rival = await ready_consumer(broker, queue)
        for _ in range(6):
            await broker.extend_lease(held, SHORT_LEASE_S)
            # The rival sees nothing while the lease is kept alive
            stolen = await rival.next(SHORT_LEASE_S / 3)
            assert stolen is None, (
                f"rival got {stolen.envelope.id} (delivery {stolen.delivery_count}) while the holder "
                f"renewed {held.envelope.id} (delivery {held.delivery_count})"
            )
        stats = await stats_of(broker, queue)
        assert counts(stats, "pending", "delayed", "inflight") == (0, 0, 1)
        await broker.ack(held)
        assert await rival.next(QUIET_S) is None
        await rival.close()
    assert len(holder.received) == 1 and [d.envelope.name for d in rival.received] == ["contract.marker"]
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (0, 0)


async def test_requeue_fences_the_old_holder(broker: Broker) -> None:
    # Given a leased message taken back by an operator and handed to someone else
    queue = qname()
    sent = env(queue=queue)
    await broker.publish(sent)
    old = await receive_one(broker, queue)
    assert old is not None
    assert await broker.requeue(queue, [sent.id]) == 1
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (1, 0)
    new = await receive_one(broker, queue)
    assert new is not None and new.envelope.id == sent.id and new.delivery_count == 2
    # When the old holder settles, then nothing changes
    await broker.ack(old)
    await broker.nack(old)
    await broker.nack(old, requeue=False)
    await broker.dead_letter(old, reason="stale")
    with pytest.raises(LeaseLost):
        await broker.extend_lease(old, 30)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight", "dead") == (0, 0, 1, 0)
    # And the new holder still owns it
    await broker.extend_lease(new, 30)
    await broker.ack(new)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight", "dead") == (0, 0, 0)


async def test_requeue_before_redelivery_fences_too(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue)
    await broker.publish(sent)
    old = await receive_one(broker, queue)
    assert old is not None
    assert await broker.requeue(queue, [sent.id]) == 1
    # The message is ready again but nobody has it: the old receipt is already void
    await broker.ack(old)
    with pytest.raises(LeaseLost):
        await broker.extend_lease(old, 30)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (1, 0)


async def test_redelivery_after_expiry_fences_the_old_holder(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue, visibility_timeout=SHORT_LEASE_S)
    await broker.publish(sent)
    old = await receive_one(broker, queue)
    assert old is not None
    new = await receive_one(broker, queue, timeout=REDELIVERY_DEADLINE_S)
    assert new is not None and new.envelope.id == sent.id
    await broker.ack(old)
    await broker.dead_letter(old, reason="stale")
    with pytest.raises(LeaseLost):
        await broker.extend_lease(old, 30)
    stats = await stats_of(broker, queue)
    assert counts(stats, "inflight", "dead") == (1, 0)
    await broker.extend_lease(new, 30)
    await broker.ack(new)
    assert known((await stats_of(broker, queue)).inflight) == 0


async def test_expired_receipt_still_settles_while_nobody_else_holds_it(broker: Broker) -> None:
    queue = qname()
    await broker.publish(env(queue=queue, visibility_timeout=SHORT_LEASE_S))
    late = await receive_one(broker, queue)
    assert late is not None
    await asyncio.sleep(SHORT_LEASE_S + 0.3)  # the lease runs out; no consumer is open
    await broker.ack(late)
    await assert_nothing(broker, queue)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (0, 0)


async def test_settling_twice_is_a_silent_no_op(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue)
    await broker.publish(sent)
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    await broker.ack(delivery)
    await broker.ack(delivery)
    await broker.nack(delivery)
    await broker.dead_letter(delivery, reason="late")
    with pytest.raises(LeaseLost):
        await broker.extend_lease(delivery, 5)
    await assert_nothing(broker, queue)
    assert await broker.get_dead_letter(queue, sent.id) is None


async def test_requeue_makes_delayed_messages_ready_and_ignores_others(broker: Broker) -> None:
    if not addressable(broker):
        pytest.skip(NOT_ADDRESSABLE)
    queue = qname()
    later, ready = delayed_env(3600, queue=queue), env(queue=queue)
    await broker.publish_many([later, ready])
    assert await broker.requeue(queue, [ready.id, "no-such-id"]) == 0  # already ready
    assert await broker.requeue(queue, [later.id]) == 1
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.delayed) == (2, 0)
    async with consuming(broker, queue, prefetch=2) as consumer:
        got = await consumer.take(2)
    assert {d.envelope.id for d in got} == {later.id, ready.id}
    for delivery in got:
        await broker.ack(delivery)


async def test_remove_deletes_in_any_live_state_and_fences_holders(broker: Broker) -> None:
    if not addressable(broker):
        pytest.skip(NOT_ADDRESSABLE)
    queue = qname()
    pending, delayed, leased, kept = env(queue=queue), delayed_env(3600, queue=queue), env(queue=queue), env(queue=queue)
    await broker.publish(leased)
    held = await receive_one(broker, queue)
    assert held is not None and held.envelope.id == leased.id
    await broker.publish_many([pending, delayed, kept])
    assert await broker.remove(queue, [pending.id, delayed.id, leased.id, "missing"]) == 3
    assert await broker.remove(queue, [pending.id]) == 0
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight") == (1, 0, 0)
    with pytest.raises(LeaseLost):
        await broker.extend_lease(held, 5)
    await broker.ack(held)  # a no-op: it was removed
    last = await receive_one(broker, queue)
    assert last is not None and last.envelope.id == kept.id
    await broker.ack(last)


async def test_stopping_mid_batch_hands_back_the_deliveries_never_handed_out(broker: Broker) -> None:
    # Given three messages with a long lease, claimed in one batch by a prefetch-3 consumer
    queue = qname()
    sent = [env(queue=queue, visibility_timeout=LONG_LEASE_S) for _ in range(3)]
    await broker.publish_many(sent)
    iterator = broker.consume(queue, prefetch=3)
    first = await asyncio.wait_for(iterator.__anext__(), DELIVERY_DEADLINE_S)  # type: ignore[attr-defined]
    # When the consumer stops after taking only the first one
    await iterator.aclose()  # type: ignore[attr-defined]
    # Then the other two are ready again at once (not after their leases), no attempt counted,
    # while the one handed out keeps its lease
    stats = await eventually(lambda: _stats_if(broker, queue, pending=2, inflight=1), timeout=DELIVERY_DEADLINE_S,
                             message="the two unhanded deliveries to be pending again")
    assert stats.delayed == 0
    async with consuming(broker, queue, prefetch=2) as consumer:
        rest = await consumer.take(2)
    assert sorted(d.envelope.id for d in [first, *rest]) == sorted(e.id for e in sent)
    assert [d.envelope.attempt for d in rest] == [0, 0]
    for delivery in [first, *rest]:
        await broker.ack(delivery)


async def _stats_if(broker: Broker, queue: str, **wanted: int) -> object:
    stats = await stats_of(broker, queue)
    return stats if counts(stats, *wanted) == tuple(wanted.values()) else None
