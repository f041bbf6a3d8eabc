"""Broker contract: dead letters (the original's cases 6-9, plus paging, filters and
the replay bookkeeping it did not check)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Awaitable, Callable

import pytest

from stem_core import Broker, Envelope
from stem_core.clock import utcnow
from stem_core.contract.broker import REPLAY_COUNT_META, REPLAYED_AT_META
from tests.specs import AdapterSpec
from tests.support import eventually

from .helpers import DELIVERY_DEADLINE_S, QUIET_S, assert_nothing, consuming, counts, env, qname, receive_one, stats_of


@pytest.fixture(autouse=True)
def _needs_dead_letters(broker: Broker) -> None:
    if not broker.capabilities.dead_letters:
        pytest.skip("this broker keeps no dead letters")


async def _kill(broker: Broker, envelopes: list[Envelope], queue: str, reason: str = "contract") -> None:
    """Publish, receive and dead-letter each envelope in order (so dead_at follows the list)."""
    async with consuming(broker, queue) as consumer:
        for sent in envelopes:
            await broker.publish(sent)
            delivery = await consumer.expect()
            assert delivery.envelope.id == sent.id
            await broker.dead_letter(delivery, reason=reason, meta={"i": envelopes.index(sent)})


async def test_dead_letters_past_retention_are_pruned_when_one_is_written(
        broker_spec: AdapterSpec, broker_factory: Callable[..., Awaitable[Broker]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a broker with a 400 ms dead-letter retention (issue 15: kept forever) and two
    # dead letters older than that
    if broker_spec.id == "sqs":
        pytest.skip("SQS drops dead letters itself (MessageRetentionPeriod, at least 60 s): see the next test")
    monkeypatch.setenv("STEM_DEAD_LETTER_RETENTION", "400ms")
    broker = await broker_factory()
    queue = qname()
    old = [env(queue=queue), env(queue=queue)]
    await _kill(broker, old, queue)
    await asyncio.sleep(0.6)
    # When two more are written
    recent = [env(queue=queue), env(queue=queue)]
    await _kill(broker, recent, queue)
    # Then the old ones are gone and the recent ones kept
    page = await broker.list_dead_letters(queue, limit=10)
    assert sorted(e.envelope.id for e in page.entries) == sorted(e.id for e in recent)
    assert await broker.get_dead_letter(queue, old[0].id) is None
    assert counts(await stats_of(broker, queue), "dead") == (2,)


async def test_sqs_dead_queues_keep_messages_for_the_dead_letter_retention(
        broker_spec: AdapterSpec, broker_factory: Callable[..., Awaitable[Broker]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    if broker_spec.id != "sqs":
        pytest.skip("the other brokers prune dead letters themselves (previous test)")
    # Given STEM_DEAD_LETTER_RETENTION=2h (SQS keeps messages 60 s..14 days)
    monkeypatch.setenv("STEM_DEAD_LETTER_RETENTION", "2h")
    broker: Any = await broker_factory()
    queue = qname()
    # When a dead letter creates the dead queue
    await _kill(broker, [env(queue=queue)], queue)
    # Then SQS itself drops its messages after 2 h (work queues keep the 14-day maximum)
    attributes = {}
    for kind in ("dead", "p0"):
        url = (await broker._conn.sqs("get_queue_url", QueueName=broker.names.queue(queue, kind)))["QueueUrl"]
        reply = await broker._conn.sqs("get_queue_attributes", QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])
        attributes[kind] = reply["Attributes"]["MessageRetentionPeriod"]
    assert attributes == {"dead": str(2 * 3600), "p0": str(14 * 86400)}


async def test_dead_letter_moves_the_job_out_of_the_queue(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue)
    await _kill(broker, [sent], queue, reason="contract-test")
    page = await broker.list_dead_letters(queue, limit=10)
    assert [e.envelope.id for e in page.entries] == [sent.id]
    assert page.entries[0].reason == "contract-test" and page.next_offset is None
    await assert_nothing(broker, queue)
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight", "dead") == (0, 0, 1)


async def test_dead_letter_entries_are_retrievable_and_purgeable(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue, args={"x": 1})
    await broker.publish(sent)
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    before = utcnow()
    await broker.dead_letter(delivery, reason="contract-get", meta={"source": "contract", "severity": "low"})
    entry = await broker.get_dead_letter(queue, sent.id)
    assert entry is not None
    assert entry.envelope.to_dict() == sent.to_dict()
    assert (entry.reason, entry.meta) == ("contract-get", {"source": "contract", "severity": "low"})
    assert before - timedelta(seconds=1) <= entry.dead_at <= utcnow() + timedelta(seconds=1)
    assert await broker.get_dead_letter(queue, "no-such-id") is None
    assert await broker.purge_dead_letters(queue) == 1
    assert (await broker.list_dead_letters(queue, limit=1)).entries == []
    assert await broker.get_dead_letter(queue, sent.id) is None


async def test_dead_letters_are_kept_under_the_delivery_queue(broker: Broker) -> None:
    home, routed = qname("home"), qname("routed")
    sent = env(queue=home)
    await broker.publish(sent, queue=routed)
    delivery = await receive_one(broker, routed)
    assert delivery is not None
    await broker.dead_letter(delivery, reason="contract")
    assert await broker.get_dead_letter(routed, sent.id) is not None
    assert (await broker.list_dead_letters(home)).entries == []


async def test_dead_letter_needs_a_reason(broker: Broker) -> None:
    queue = qname()
    await broker.publish(env(queue=queue))
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    with pytest.raises(ValueError):
        await broker.dead_letter(delivery, reason="")
    await broker.ack(delivery)


async def test_dead_letters_page_newest_first(broker: Broker) -> None:
    queue = qname()
    sent = [env(queue=queue) for _ in range(5)]
    await _kill(broker, sent, queue)
    newest_first = [e.id for e in reversed(sent)]
    first = await broker.list_dead_letters(queue, limit=2)
    assert [e.envelope.id for e in first.entries] == newest_first[:2] and first.next_offset == 2
    second = await broker.list_dead_letters(queue, limit=2, offset=2)
    assert [e.envelope.id for e in second.entries] == newest_first[2:4] and second.next_offset == 4
    last = await broker.list_dead_letters(queue, limit=2, offset=4)
    assert [e.envelope.id for e in last.entries] == newest_first[4:] and last.next_offset is None
    whole = await broker.list_dead_letters(queue, limit=5)
    assert [e.envelope.id for e in whole.entries] == newest_first and whole.next_offset is None
    assert (await broker.list_dead_letters(queue, offset=9)).entries == []


async def test_replay_dry_run_changes_nothing_then_replay_requeues(broker: Broker) -> None:
    # Given a dead letter that had used up retries
    queue = qname()
    sent = env(queue=queue, attempt=3, max_retries=3, meta={"keep": True})
    await _kill(broker, [sent], queue)
    # When replayed as a dry run, then it is only reported
    dry = await broker.replay_dead_letters(queue, limit=10, dry_run=True)
    assert dry.dry_run is True and [e.envelope.id for e in dry.entries] == [sent.id]
    assert await broker.get_dead_letter(queue, sent.id) is not None
    assert (await stats_of(broker, queue)).pending == 0
    await assert_nothing(broker, queue)
    # When replayed for real, then it is back on the queue with the same id and a fresh budget
    result = await broker.replay_dead_letters(queue, limit=10)
    assert result.dry_run is False and [e.envelope.id for e in result.entries] == [sent.id]
    assert await broker.get_dead_letter(queue, sent.id) is None
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.dead) == (1, 0)
    delivery = await receive_one(broker, queue)
    assert delivery is not None and delivery.envelope.id == sent.id
    assert delivery.envelope.attempt == 0 and delivery.envelope.max_retries == 3
    assert delivery.envelope.meta["keep"] is True
    assert delivery.envelope.meta[REPLAY_COUNT_META] == 1 and delivery.envelope.meta[REPLAYED_AT_META]
    await broker.ack(delivery)


async def test_replayed_twice_counts_two(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue)
    await _kill(broker, [sent], queue)
    await broker.replay_dead_letters(queue)
    async with consuming(broker, queue) as consumer:
        delivery = await consumer.expect()
        await broker.dead_letter(delivery, reason="again")
    assert (await broker.replay_dead_letters(queue)).count == 1
    delivery = await receive_one(broker, queue)
    assert delivery is not None and delivery.envelope.meta[REPLAY_COUNT_META] == 2
    await broker.ack(delivery)


async def test_replay_with_delay_schedules_the_job(broker: Broker) -> None:
    queue, short = qname(), qname("short")
    far, soon = env(queue=queue), env(queue=short)
    await _kill(broker, [far], queue)
    before = utcnow()
    await broker.replay_dead_letters(queue, delay=3600)
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.delayed, stats.dead) == (0, 1, 0)
    if broker.capabilities.peek:  # without peek the delayed message cannot be looked at
        (info,) = await broker.peek(queue, state="delayed")
        assert info.envelope.id == far.id and info.envelope.not_before >= before + timedelta(seconds=3599)
    await assert_nothing(broker, queue)
    # A short delay: invisible at first, delivered once due
    await _kill(broker, [soon], short)
    await broker.replay_dead_letters(short, delay=timedelta(seconds=0.6))
    assert (await stats_of(broker, short)).delayed == 1
    delivery = await receive_one(broker, short)
    assert delivery is not None and delivery.envelope.id == soon.id
    assert delivery.envelope.not_before is not None and utcnow() >= delivery.envelope.not_before
    await broker.ack(delivery)


async def test_replay_filters_by_ids_task_since_and_limit_oldest_first(broker: Broker) -> None:
    queue = qname()
    sent = [env(name="task.a" if i % 2 == 0 else "task.b", queue=queue) for i in range(6)]
    await _kill(broker, sent, queue)
    # task filter, oldest first (dry run: nothing moves)
    dry = await broker.replay_dead_letters(queue, task="task.a", dry_run=True)
    assert [e.envelope.id for e in dry.entries] == [sent[0].id, sent[2].id, sent[4].id]
    # limit takes the oldest
    dry = await broker.replay_dead_letters(queue, limit=2, dry_run=True)
    assert [e.envelope.id for e in dry.entries] == [sent[0].id, sent[1].id]
    # since: dead_at >= the 4th entry's time
    cutoff = (await broker.get_dead_letter(queue, sent[3].id)).dead_at  # type: ignore[union-attr]
    dry = await broker.replay_dead_letters(queue, since=cutoff, dry_run=True)
    assert [e.envelope.id for e in dry.entries][:1] == [sent[3].id]
    assert {e.envelope.id for e in dry.entries} <= {e.id for e in sent[2:]}
    assert (await stats_of(broker, queue)).dead == 6
    # ids: exactly those
    moved = await broker.replay_dead_letters(queue, ids=[sent[5].id, sent[1].id, "missing"])
    assert [e.envelope.id for e in moved.entries] == [sent[1].id, sent[5].id]
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.dead) == (2, 4)
    # ids combined with task narrows further
    moved = await broker.replay_dead_letters(queue, ids=[sent[0].id, sent[3].id], task="task.a")
    assert [e.envelope.id for e in moved.entries] == [sent[0].id]
    assert (await broker.replay_dead_letters(queue, limit=0)).entries == []
    result = await broker.replay_dead_letters(qname("empty"))
    assert result.entries == [] and result.count == 0


async def test_purge_dead_letters_since_and_limit(broker: Broker) -> None:
    queue = qname()
    sent = [env(queue=queue) for _ in range(4)]
    await _kill(broker, sent, queue)
    # limit takes the oldest
    assert await broker.purge_dead_letters(queue, limit=1) == 1
    assert await broker.get_dead_letter(queue, sent[0].id) is None
    cutoff = (await broker.get_dead_letter(queue, sent[3].id)).dead_at  # type: ignore[union-attr]
    assert await broker.purge_dead_letters(queue, since=cutoff + timedelta(days=1)) == 0
    purged = await broker.purge_dead_letters(queue, since=cutoff)
    assert purged >= 1 and await broker.get_dead_letter(queue, sent[3].id) is None
    assert await broker.purge_dead_letters(queue) == 3 - purged
    assert (await stats_of(broker, queue)).dead == 0


async def test_dead_letter_then_replay_is_visible_to_an_idle_consumer(broker: Broker) -> None:
    queue = qname()
    sent = env(queue=queue)
    await _kill(broker, [sent], queue)
    async with consuming(broker, queue) as consumer:
        assert await consumer.next(QUIET_S) is None
        await broker.replay_dead_letters(queue)
        delivery = await consumer.expect()
        assert delivery.envelope.id == sent.id
        await broker.ack(delivery)
    await eventually(lambda: _all_clear(broker, queue), timeout=DELIVERY_DEADLINE_S, message="an empty queue")


async def _all_clear(broker: Broker, queue: str) -> bool:
    stats = await stats_of(broker, queue)
    return counts(stats, "pending", "inflight", "dead") == (0, 0, 0)
