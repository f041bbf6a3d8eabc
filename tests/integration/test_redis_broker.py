"""Redis broker: what only this adapter has, checked against the real server (database 9,
one namespace per test): the key layout, memory that stays flat, lease extension that
never re-publishes, consumers that never pile up in a group, undecodable entries, lost
groups and scripts, chunked repairs and broadcast trimming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from stem_core import Envelope
from stem_core.clock import utcnow
from stem_core.adapters.redis import RedisBroker
from stem_core.adapters.redis import inspect as redis_inspect
from stem_core.adapters.redis.keys import channel_keys, queue_block
from stem_core.envelope import Delivery
from stem_core.errors import InvalidName
from tests.contract.helpers import Consumer
from tests.specs import AdapterSpec, require_service
from tests.specs.redis import REDIS_TEST_URL, SPEC
from tests.support import eventually

BrokerFactory = Callable[..., Awaitable[RedisBroker]]
# Upper bound for waiting on an event; tests never assert on timings.
DEADLINE_S = 10.0
# A subscriber reads at least every second; reaping one needs minutes of silence.
SILENT_BUT_KEPT_S = 60


@pytest.fixture
def broker_spec() -> AdapterSpec:
    """Redis only: ``broker_factory`` (tests/conftest.py) opens brokers on the test's
    namespace, closes them and removes the namespace afterwards."""
    require_service("redis")
    return SPEC


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client on the test database, for white-box checks."""
    client = Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def subscription(broker: RedisBroker, queues: list[str], **options: object) -> AsyncIterator[AsyncIterator[Delivery]]:
    it = broker.consume(queues, **options)
    try:
        yield it
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def group_exists(raw: Redis, stream: str) -> bool:
    return bool(await raw.exists(stream) and await raw.xinfo_groups(stream))


@contextlib.asynccontextmanager
async def listening(broker: RedisBroker, raw: Redis, stream: str) -> AsyncIterator[Consumer]:
    """A channel-only subscription whose group certainly exists (it is made on first read)."""
    listener = Consumer(broker, [], channels=["ctl"])
    try:
        await eventually(lambda: group_exists(raw, stream), timeout=DEADLINE_S, message="the subscription to open")
        yield listener
    finally:
        await listener.close()


async def next_delivery(it: AsyncIterator[Delivery], timeout: float = DEADLINE_S) -> Delivery:
    return await asyncio.wait_for(it.__anext__(), timeout)


def keys_of(namespace: str, queue: str) -> dict[str, str]:
    names = [f"s{b}" for b in range(10)] + ["delayed", "dly", "leases", "lease", "idx", "stats", "dead", "deadbody", "p", "w"]
    return dict(zip(names, queue_block(namespace, queue)))


async def test_a_queue_lives_in_one_cluster_slot_and_names_cannot_forge_keys(broker_factory: BrokerFactory) -> None:
    # Every key of a queue carries the same {queue} hash tag
    block = queue_block("stem", "emails")
    assert {key_slot(k.encode()) for k in block} == {key_slot(b"emails")}
    assert len(set(block)) == len(block)
    # A name that tries to close the tag (or open another) never reaches a key
    broker = await broker_factory()
    for bad in ("a}:s0", "{x}", "q}"):
        with pytest.raises(InvalidName):
            await broker.publish(Envelope(name="t"), queue=bad)
    # Channels use suffixes no queue key has
    stream, subs = channel_keys("stem", "emails")
    assert stream not in block and subs not in block


async def test_settled_messages_leave_nothing_behind(broker_factory: BrokerFactory, raw: Redis, namespace: str) -> None:
    # Given messages published, delayed, leased, acked, nacked and dead-lettered
    broker = await broker_factory()
    k = keys_of(namespace, "flat")
    await broker.publish_many([Envelope(name="t", queue="flat", priority=i % 10) for i in range(60)])
    async with subscription(broker, ["flat"], prefetch=20) as it:
        handled = 0
        while handled < 60:
            delivery = await next_delivery(it)
            if handled % 7 == 3 and delivery.envelope.attempt == 0:
                await broker.nack(delivery)  # comes back once
                continue
            await broker.ack(delivery)
            handled += 1
    # Then the streams, leases and the index hold nothing: memory follows live messages only
    for band in range(10):
        assert await raw.xlen(k[f"s{band}"]) == 0
    assert await raw.zcard(k["leases"]) == 0 and await raw.hlen(k["lease"]) == 0
    assert await raw.hlen(k["idx"]) == 0 and await raw.zcard(k["delayed"]) == 0 and await raw.hlen(k["dly"]) == 0
    assert await raw.xlen(k["p"]) == 0 and await raw.xlen(k["w"]) <= 1
    for band in range(10):
        if await raw.exists(k[f"s{band}"]):
            assert (await raw.xpending(k[f"s{band}"], "stem"))["pending"] == 0
    (stats,) = await broker.queue_stats(["flat"])
    assert (stats.pending, stats.inflight, stats.enqueued_total, stats.completed_total) == (0, 0, 60, 60)


async def test_extend_lease_resets_idle_time_and_never_republishes(broker_factory: BrokerFactory, raw: Redis, namespace: str) -> None:
    broker = await broker_factory()
    k = keys_of(namespace, "long")
    await broker.publish(Envelope(name="t", queue="long"))
    async with subscription(broker, ["long"]) as it:
        delivery = await next_delivery(it)
        await asyncio.sleep(0.3)
        before = (await raw.xpending_range(k["s0"], "stem", "-", "+", 10))[0]
        deadline = await broker.extend_lease(delivery, 60)
        after = (await raw.xpending_range(k["s0"], "stem", "-", "+", 10))[0]
        # Same entry, still one delivery, idle time back near zero, one message in the stream
        assert after["message_id"] == before["message_id"]
        assert after["times_delivered"] == before["times_delivered"] == 1
        assert after["time_since_delivered"] < before["time_since_delivered"]
        assert await raw.xlen(k["s0"]) == 1
        lid = delivery.receipt.split("|")[1]
        assert abs(float(await raw.zscore(k["leases"], lid)) / 1e6 - deadline.timestamp()) < 0.01
        await broker.ack(delivery)


async def test_consumers_never_accumulate_in_a_group(broker_factory: BrokerFactory, raw: Redis, namespace: str) -> None:
    broker = await broker_factory()
    k = keys_of(namespace, "crowd")
    for name in ("worker-a", "worker-b", "worker-c"):
        await broker.publish(Envelope(name="t", queue="crowd"))
        async with subscription(broker, ["crowd"], consumer=name) as it:
            delivery = await next_delivery(it)
            # The holder is recorded for peek, without a Redis consumer per name
            (info,) = await broker.peek("crowd", state="inflight")
            assert info.lease_holder == name
            await broker.ack(delivery)
    assert [c["name"] for c in await raw.xinfo_consumers(k["s0"], "stem")] == ["stem"]


async def test_an_undecodable_entry_is_dead_lettered_and_does_not_block(broker_factory: BrokerFactory, raw: Redis,
                                                                         namespace: str) -> None:
    # Given a foreign writer's broken entry ahead of a good message
    broker = await broker_factory()
    await broker.publish(Envelope(name="t", queue="mixed"))  # registers the queue
    k = keys_of(namespace, "mixed")
    async with subscription(broker, ["mixed"]) as it:
        await broker.ack(await next_delivery(it))
        await raw.xadd(k["s0"], {"e": "{not json", "r": "0"})
        good = Envelope(name="good", queue="mixed")
        await broker.publish(good)
        # Then the consumer gets the good one and the broken one is a dead letter
        delivery = await next_delivery(it)
        assert delivery.envelope.id == good.id
        await broker.ack(delivery)
    page = await broker.list_dead_letters("mixed")
    assert [(e.reason, e.envelope.name) for e in page.entries] == [("invalid-envelope", "<invalid>")]
    assert "{not json" in page.entries[0].envelope.meta["raw"]


async def test_a_destroyed_group_is_recreated_without_losing_messages(broker_factory: BrokerFactory, raw: Redis,
                                                                       namespace: str) -> None:
    broker = await broker_factory()
    k = keys_of(namespace, "ops")
    sent = [Envelope(name="t", queue="ops") for _ in range(3)]
    await broker.publish_many(sent)
    async with subscription(broker, ["ops"]) as it:
        await broker.ack(await next_delivery(it))
    # An operator destroys the group: the remaining entries are still delivered
    await raw.xgroup_destroy(k["s0"], "stem")
    async with subscription(broker, ["ops"], prefetch=5) as it:
        got = {(await next_delivery(it)).envelope.id for _ in range(2)}
    assert got == {sent[1].id, sent[2].id}


async def test_flushed_scripts_are_loaded_again(broker_factory: BrokerFactory, raw: Redis) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="t", queue="s"))
    await raw.script_flush()
    await broker.publish(Envelope(name="t", queue="s"))
    (stats,) = await broker.queue_stats(["s"])
    assert stats.pending == 2


async def test_remove_and_purge_work_through_long_queues_in_chunks(broker_factory: BrokerFactory,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks so a few dozen messages span many script calls
    monkeypatch.setattr(redis_inspect, "REPAIR_BATCH", 7)
    broker = await broker_factory()
    sent = [Envelope(name="t", queue="long", priority=i % 3) for i in range(40)]
    await broker.publish_many(sent)
    doomed = {sent[0].id, sent[17].id, sent[39].id, "no-such-id"}
    assert await broker.remove("long", doomed) == 3
    (stats,) = await broker.queue_stats(["long"])
    assert stats.pending == 37
    assert await broker.purge("long") == 37
    (stats,) = await broker.queue_stats(["long"])
    assert stats.pending == 0


async def test_broadcast_streams_keep_only_unread_copies(broker_factory: BrokerFactory, raw: Redis, namespace: str) -> None:
    broker = await broker_factory()
    stream, subs = channel_keys(namespace, "ctl")
    # Nobody listens: nothing is kept
    await broker.broadcast("ctl", Envelope(name="lost"))
    assert await raw.xlen(stream) == 0
    async with listening(broker, raw, stream) as listener:
        for i in range(5):
            await broker.broadcast("ctl", Envelope(name=f"b{i}"))
            assert (await listener.expect()).envelope.name == f"b{i}"
        # Everything the only subscriber read is trimmed at the next publish
        await broker.broadcast("ctl", Envelope(name="last"))
        assert await raw.xlen(stream) <= 2
        assert (await listener.expect()).envelope.name == "last"
    # Closing the subscription removes its group
    assert await raw.xinfo_groups(stream) == [] and await raw.zcard(subs) == 0


async def test_a_silent_subscriber_is_reaped_and_a_live_one_resubscribes(broker_factory: BrokerFactory, raw: Redis,
                                                                         namespace: str) -> None:
    broker = await broker_factory()
    stream, subs = channel_keys(namespace, "ctl")
    async with listening(broker, raw, stream) as listener:
        await broker.broadcast("ctl", Envelope(name="first"))
        assert (await listener.expect()).envelope.name == "first"
        # A subscriber silent for a whole minute (a stalled process) is not reaped
        (group,) = await raw.zrange(subs, 0, -1)
        seconds, _ = await raw.time()
        await raw.zadd(subs, {group: (seconds - SILENT_BUT_KEPT_S) * 1000})
        await broker.broadcast("ctl", Envelope(name="still-here"))
        assert [g["name"] for g in await raw.xinfo_groups(stream)] == [group]
        assert (await listener.expect()).envelope.name == "still-here"
        # Its record ages past the stale limit (as if it had stopped reading)
        await raw.zadd(subs, {group: 1})
        await broker.broadcast("ctl", Envelope(name="to-nobody"))
        assert await raw.xinfo_groups(stream) == []
        # The live subscriber notices its group is gone and subscribes again
        await eventually(lambda: raw.xinfo_groups(stream), timeout=DEADLINE_S, message="the subscriber to come back")
        await broker.broadcast("ctl", Envelope(name="again"))
        assert (await listener.expect()).envelope.name == "again"


async def test_a_short_socket_timeout_never_breaks_an_idle_consumer(broker_factory: BrokerFactory,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    # A blocking read must answer inside the socket timeout, whatever that is set to
    caplog.set_level(logging.WARNING, logger="stem.redis")
    broker = await broker_factory(socket_timeout=0.3)
    async with subscription(broker, ["idle"]) as it:
        waiter = asyncio.create_task(next_delivery(it))
        await asyncio.sleep(1.5)  # several blocking waits pass with nothing to read
        sent = Envelope(name="t", queue="idle")
        await broker.publish(sent)
        assert (await waiter).envelope.id == sent.id
    assert not [r for r in caplog.records if "lost Redis" in r.getMessage()]


async def test_the_enqueued_total_counts_each_enqueue_once(broker_factory: BrokerFactory) -> None:
    # Given 3 ready and 2 delayed publishes
    broker = await broker_factory()
    soon = utcnow() + timedelta(seconds=0.2)
    later = utcnow() + timedelta(hours=1)
    ready = [Envelope(name="t", queue="count") for _ in range(3)]
    parked = Envelope(name="t", queue="count", not_before=later)
    await broker.publish_many([*ready, Envelope(name="t", queue="count", not_before=soon), parked])
    # When messages come back in every way the broker has (nack, delayed nack, promotion,
    # requeue of a delayed one) and a dead letter is replayed
    await broker.requeue("count", [parked.id])
    async with subscription(broker, ["count"], prefetch=10) as it:
        first, second, third = [await next_delivery(it) for _ in range(3)]
        await broker.nack(first)
        await broker.nack(second, delay=0.1)
        await broker.dead_letter(third, reason="test")
        assert (await broker.replay_dead_letters("count")).count == 1
        # Then everything left (nacked twice, replayed, promoted, requeued) is delivered and acked
        acked = 0
        while True:
            (stats,) = await broker.queue_stats(["count"])
            if stats.pending + stats.delayed + stats.inflight == 0:
                break
            await broker.ack(await next_delivery(it))
            acked += 1
        assert acked == 5
    # And the total counts the 5 publishes and the replay, nothing else
    (stats,) = await broker.queue_stats(["count"])
    assert (stats.enqueued_total, stats.pending, stats.delayed, stats.inflight) == (6, 0, 0, 0)


async def test_reply_queues_are_never_registered_and_their_keys_expire(broker: RedisBroker, raw: Redis,
                                                                       namespace: str) -> None:
    # Given a control reply published on a reply queue (issue 15: it was registered and kept forever)
    from stem_core.control.protocol import new_request_id, reply_queue_name
    from stem_core.settings import REPLY_QUEUE_TTL_SECONDS

    queue = reply_queue_name(new_request_id())
    await broker.publish(Envelope(name="stem.control.reply"), queue=queue)
    # Then the registry every overview scans does not name it, and its keys expire by themselves
    assert queue not in await raw.smembers(f"{namespace}:queues")
    keys = [k async for k in raw.scan_iter(match=f"{namespace}:{{{queue}}}:*")]
    ttls = [await raw.pttl(k) for k in keys]
    assert keys and all(0 < ttl <= REPLY_QUEUE_TTL_SECONDS * 1000 for ttl in ttls), ttls


async def test_reply_queues_registered_by_older_versions_are_forgotten_once_empty(broker: RedisBroker, raw: Redis,
                                                                                   namespace: str) -> None:
    stale = "stem.reply.0123456789abcdef"
    await raw.sadd(f"{namespace}:queues", stale)
    assert stale not in await broker.list_queues()
    assert stale not in await raw.smembers(f"{namespace}:queues")
