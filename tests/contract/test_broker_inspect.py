"""Broker contract: queue_stats, peek, list_queues, publish_many and input validation."""

from __future__ import annotations

import asyncio

import pytest

from stem_core import Broker, Envelope
from stem_core.clock import utcnow
from stem_core.errors import InvalidEnvelope
from stem_core.limits import MAX_CURSOR_LENGTH, MAX_PAGE_LIMIT, MAX_PAGE_OFFSET
from tests.specs import AdapterSpec

from .helpers import NO_AGES, consuming, counts, delayed_env, env, known, qname, receive_one, stats_of

BAD_NAMES = ["", "a b", "../x", "a*", "' OR 1=1 --", "q\n", "\x1b[2J", "é", "x" * 201]


def _needs_age(spec: AdapterSpec) -> None:
    if not spec.knows_age:
        pytest.skip(NO_AGES)


def _needs_peek(broker: Broker) -> None:
    if not broker.capabilities.peek:
        pytest.skip("this broker cannot peek")


async def test_queue_stats_reports_every_state(broker: Broker, broker_spec: AdapterSpec) -> None:
    # Given 1 dead, 1 leased, 2 pending and 1 delayed message
    queue = qname()
    await broker.publish(env(queue=queue))
    dead = await receive_one(broker, queue)
    assert dead is not None
    await broker.dead_letter(dead, reason="contract")
    await broker.publish(env(queue=queue))
    held = await receive_one(broker, queue)
    assert held is not None
    await broker.publish_many([env(queue=queue), env(queue=queue, priority=9), delayed_env(3600, queue=queue)])
    # Then each figure is exact, and totals (where kept) count publishes and acks
    stats = await stats_of(broker, queue)
    assert counts(stats, "queue", "pending", "delayed", "inflight", "dead") == (queue, 2, 1, 1, 1)
    if broker_spec.knows_age:
        assert stats.oldest_pending_age is not None and stats.oldest_pending_age >= 0
    if stats.enqueued_total is not None:
        assert stats.enqueued_total == 5
    if stats.completed_total is not None:
        assert stats.completed_total == 0
    await broker.ack(held)
    stats = await stats_of(broker, queue)
    assert known(stats.inflight) == 0
    if stats.completed_total is not None:
        assert stats.completed_total == 1


async def test_oldest_pending_age_grows_from_enqueue_time(broker: Broker, broker_spec: AdapterSpec) -> None:
    _needs_age(broker_spec)
    queue = qname()
    sent = env(queue=queue)
    await broker.publish(sent)
    await asyncio.sleep(0.3)
    stats = await stats_of(broker, queue)
    waited = (utcnow() - sent.enqueued_at).total_seconds()
    assert stats.oldest_pending_age is not None
    # Measured from enqueued_at: at least the time we slept, at most the time since creation
    assert 0.25 <= stats.oldest_pending_age <= waited + 0.05


async def test_oldest_pending_age_ignores_delayed_and_leased_messages(broker: Broker, broker_spec: AdapterSpec) -> None:
    queue = qname()
    await broker.publish(delayed_env(3600, queue=queue))
    assert (await stats_of(broker, queue)).oldest_pending_age is None
    await broker.publish(env(queue=queue))
    assert (await stats_of(broker, queue)).oldest_pending_age is not None or not broker_spec.knows_age
    held = await receive_one(broker, queue)
    assert held is not None
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "delayed", "inflight", "oldest_pending_age") == (0, 1, 1, None)
    await broker.ack(held)


async def test_oldest_pending_age_of_a_due_delayed_message_counts_from_not_before(broker: Broker, broker_spec: AdapterSpec) -> None:
    _needs_age(broker_spec)
    queue = qname()
    sent = delayed_env(0.3, queue=queue, enqueued_at=utcnow().replace(year=2020))
    await broker.publish(sent)
    await asyncio.sleep(0.5)
    stats = await stats_of(broker, queue)
    assert stats.pending == 1 and stats.oldest_pending_age is not None
    assert stats.oldest_pending_age < 3600  # not six years: measured from not_before


async def test_stats_of_unknown_queue_is_all_zero(broker: Broker) -> None:
    queue = qname("never")
    stats = await stats_of(broker, queue)
    assert counts(stats, "queue", "pending", "delayed", "inflight", "dead", "oldest_pending_age") == (
        queue, 0, 0, 0, 0, None,
    )


async def test_queue_stats_keeps_the_order_asked_and_lists_all_known(broker: Broker) -> None:
    names = [qname("z"), qname("a"), qname("m")]
    for name in names:
        await broker.publish(env(queue=name))
    assert [s.queue for s in await broker.queue_stats(names)] == names
    every = await broker.queue_stats()
    assert {s.queue for s in every} >= set(names)


async def test_list_queues_covers_every_state_sorted(broker: Broker) -> None:
    pending_q, delayed_q, leased_q, dead_q = qname("p"), qname("d"), qname("l"), qname("x")
    await broker.publish(env(queue=pending_q))
    await broker.publish(delayed_env(3600, queue=delayed_q))
    await broker.publish(env(queue=leased_q))
    held = await receive_one(broker, leased_q)
    await broker.publish(env(queue=dead_q))
    doomed = await receive_one(broker, dead_q)
    assert held is not None and doomed is not None
    await broker.dead_letter(doomed, reason="contract")
    queues = await broker.list_queues()
    assert set(queues) >= {pending_q, delayed_q, leased_q, dead_q}
    assert queues == sorted(queues)
    await broker.ack(held)


async def test_peek_pending_is_in_delivery_order_and_claims_nothing(broker: Broker) -> None:
    _needs_peek(broker)
    queue = qname()
    sent = [env(queue=queue, priority=p) for p in (0, 5, 9, 5)]
    await broker.publish_many(sent)
    order = [sent[2].id, sent[1].id, sent[3].id, sent[0].id]
    infos = await broker.peek(queue)
    assert [i.envelope.id for i in infos] == order
    assert all(i.state == "pending" and i.lease_holder is None for i in infos)
    assert [i.envelope.id for i in await broker.peek(queue, limit=2, offset=1)] == order[1:3]
    assert await broker.peek(queue, offset=10) == []
    assert (await stats_of(broker, queue)).pending == 4
    async with consuming(broker, queue) as consumer:
        assert (await consumer.expect()).envelope.id == order[0]


async def test_peek_delayed_is_by_due_time(broker: Broker) -> None:
    _needs_peek(broker)
    queue = qname()
    far, near = delayed_env(7200, queue=queue), delayed_env(3600, queue=queue)
    await broker.publish_many([far, near])
    infos = await broker.peek(queue, state="delayed")
    assert [(i.envelope.id, i.state) for i in infos] == [(near.id, "delayed"), (far.id, "delayed")]
    assert await broker.peek(queue) == []


async def test_peek_inflight_names_the_lease_holder(broker: Broker) -> None:
    _needs_peek(broker)
    queue = qname()
    sent = env(queue=queue)
    await broker.publish(sent)
    async with consuming(broker, queue, consumer="contract-holder-1") as consumer:
        delivery = await consumer.expect()
        (info,) = await broker.peek(queue, state="inflight")
        assert (info.envelope.id, info.state, info.lease_holder, info.delivery_count) == (
            sent.id, "inflight", "contract-holder-1", 1,
        )
        assert info.lease_expires_at is not None
        assert abs((info.lease_expires_at - delivery.lease_expires_at).total_seconds()) < 1.0
        await broker.ack(delivery)
    assert await broker.peek(queue, state="inflight") == []


async def _walk(broker: Broker, queue: str, state: str, limit: int, cursor: str | None = None) -> list[str]:
    ids: list[str] = []
    for _ in range(100):
        page = await broker.peek_page(queue, state=state, limit=limit, cursor=cursor)
        ids += [m.envelope.id for m in page.messages]
        assert all(m.state == state for m in page.messages)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor
    raise AssertionError("peek_page never reached the last page")


@pytest.mark.parametrize("state", ["pending", "delayed"])
async def test_peek_pages_by_cursor_in_the_order_of_one_peek(broker: Broker, state: str) -> None:
    # Given 23 messages over three priorities (delayed ones over 23 due times)
    _needs_peek(broker)
    queue = qname()
    if state == "delayed":
        sent = [delayed_env(3600 + 60 * (i % 7) + i, queue=queue, priority=i % 3) for i in range(23)]
    else:
        sent = [env(queue=queue, priority=i % 3) for i in range(23)]
    await broker.publish_many(sent)
    # When they are walked five at a time by cursor
    ids = await _walk(broker, queue, state, 5)
    # Then the pages give every message once, in the order one big peek gives them
    assert ids == [i.envelope.id for i in await broker.peek(queue, state=state, limit=100)]
    assert sorted(ids) == sorted(e.id for e in sent)


async def test_peek_pages_in_flight_messages_by_cursor(broker: Broker) -> None:
    _needs_peek(broker)
    queue = qname()
    sent = [env(queue=queue) for _ in range(7)]
    await broker.publish_many(sent)
    async with consuming(broker, queue, prefetch=7) as consumer:
        held = [await consumer.expect() for _ in sent]
        ids = await _walk(broker, queue, "inflight", 3)
        assert ids == [i.envelope.id for i in await broker.peek(queue, state="inflight", limit=100)]
        assert sorted(ids) == sorted(e.id for e in sent)
        for delivery in held:
            await broker.ack(delivery)


@pytest.mark.parametrize("state", ["pending", "delayed"])
async def test_a_change_between_pages_neither_repeats_nor_skips_a_message(broker: Broker, state: str) -> None:
    # Given 14 messages over three priorities (delayed ones over 14 due times)
    _needs_peek(broker)
    queue = qname()
    if state == "delayed":
        sent = [delayed_env(3600 + 60 * i, queue=queue, priority=i % 3) for i in range(14)]
    else:
        sent = [env(queue=queue, priority=i % 3) for i in range(14)]
    await broker.publish_many(sent)
    order = [i.envelope.id for i in await broker.peek(queue, state=state, limit=100)]
    first = await broker.peek_page(queue, state=state, limit=5)
    assert [m.envelope.id for m in first.messages] == order[:5] and first.next_cursor is not None
    # When, before the next page, three messages of the first page go, one message is
    # published that sorts before the cursor and one that sorts after every other
    assert await broker.remove(queue, set(order[:3])) == 3
    if state == "delayed":
        early, late = delayed_env(3000, queue=queue), delayed_env(90_000, queue=queue)
    else:
        early, late = env(queue=queue, priority=9), env(queue=queue, priority=0)
    await broker.publish_many([early, late])
    # Then the next pages go on right after the first page's last message: none of the
    # first page again, none skipped, the one published before the cursor not among them
    rest = await _walk(broker, queue, state, 5, first.next_cursor)
    assert rest == order[5:] + [late.id]


@pytest.mark.parametrize("limit, offset", [(MAX_PAGE_LIMIT + 1, 0), (10, MAX_PAGE_OFFSET + 1), (10**20, 0), (1, -1)])
async def test_peek_limit_and_offset_are_bounded(broker: Broker, limit: int, offset: int) -> None:
    with pytest.raises(ValueError, match="limit|offset"):
        await broker.peek(qname(), limit=limit, offset=offset)


async def test_peek_page_refuses_a_cursor_it_did_not_give(broker: Broker) -> None:
    _needs_peek(broker)
    queue = qname()
    await broker.publish(env(queue=queue))
    page = await broker.peek_page(queue, state="delayed", limit=1)
    assert page.next_cursor is None
    bad_cursors = ["x" * (MAX_CURSOR_LENGTH + 1), "", "not|a|cursor' or 1=1", "o99999999999", "kp:1:2:3' OR 1=1 --",
                   "kp:9:1e999:1", "kp:99999999999999999999:1.5:1", "kd:nan:1", "kp:1:2", "kp:1:2:3:4", "kp:1:2:3\n"]
    for bad in bad_cursors:
        for state in ("pending", "delayed", "inflight"):
            with pytest.raises(ValueError, match="cursor"):
                await broker.peek_page(queue, state=state, cursor=bad)


async def test_a_cursor_belongs_to_its_state(broker: Broker) -> None:
    # Given a cursor of a pending page
    _needs_peek(broker)
    queue = qname()
    await broker.publish_many([env(queue=queue) for _ in range(3)])
    cursor = (await broker.peek_page(queue, limit=1)).next_cursor
    assert cursor is not None
    # Then it pages pending messages on, and is refused for another state
    assert len((await broker.peek_page(queue, limit=5, cursor=cursor)).messages) == 2
    with pytest.raises(ValueError, match="cursor"):
        await broker.peek_page(queue, state="delayed", cursor=cursor)


async def test_peek_rejects_unknown_states(broker: Broker) -> None:
    with pytest.raises(ValueError, match="state"):
        await broker.peek(qname(), state="dead")


async def test_publish_many_of_a_thousand(broker: Broker, broker_spec: AdapterSpec) -> None:
    # A thousand, or fewer on a slow test server (spec.load): still many batches and pages
    queue, total = qname(), max(200, int(1000 * broker_spec.load))
    sent = [env(queue=queue, args={"i": i}) for i in range(total)]
    await broker.publish_many(sent)
    assert (await stats_of(broker, queue)).pending == total
    seen: set[str] = set()
    async with consuming(broker, queue, prefetch=100) as consumer:
        while len(seen) < total:
            delivery = await consumer.expect()
            assert delivery.envelope.id not in seen
            seen.add(delivery.envelope.id)
            await broker.ack(delivery)
    assert seen == {e.id for e in sent}
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (0, 0)


async def test_publish_many_of_nothing_is_a_no_op(broker: Broker) -> None:
    await broker.publish_many([])


@pytest.mark.parametrize("bad", BAD_NAMES)
async def test_invalid_queue_and_channel_names_are_rejected(broker: Broker, bad: str) -> None:
    with pytest.raises(ValueError):
        await broker.publish(env(), queue=bad)
    with pytest.raises(ValueError):
        broker.consume([bad])
    with pytest.raises(ValueError):
        broker.consume(["ok"], channels=[bad])
    with pytest.raises(ValueError):
        await broker.broadcast(bad, env())
    for call in (
        broker.queue_stats([bad]),
        broker.peek(bad),
        broker.purge(bad),
        broker.requeue(bad, ["x"]),
        broker.remove(bad, ["x"]),
        broker.list_dead_letters(bad),
        broker.replay_dead_letters(bad),
        broker.purge_dead_letters(bad),
    ):
        with pytest.raises(ValueError):
            await call
    with pytest.raises(InvalidEnvelope):
        Envelope(name="t", queue=bad)


@pytest.mark.parametrize("priority", [-1, 10, 99, True, 1.5, "5"])
async def test_priority_out_of_range_is_rejected(broker: Broker, priority: object) -> None:
    with pytest.raises(ValueError):
        await broker.publish(env(queue=qname()), priority=priority)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Envelope(name="t", priority=priority)  # type: ignore[arg-type]


async def test_consume_arguments_are_checked_at_call_time(broker: Broker) -> None:
    for prefetch in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            broker.consume([qname()], prefetch=prefetch)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        broker.consume([])


async def test_paging_arguments_are_checked(broker: Broker) -> None:
    queue = qname()
    with pytest.raises(ValueError):
        await broker.peek(queue, limit=-1)
    with pytest.raises(ValueError):
        await broker.list_dead_letters(queue, offset=-1)
    with pytest.raises(ValueError):
        await broker.requeue(queue, [""])
