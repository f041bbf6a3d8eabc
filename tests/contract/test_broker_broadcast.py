"""Broker contract: broadcast fan-out (the original's case 16, which it ran for one
process only and which, in the original, reached one worker). Every subscriber open at
publish time gets its own copy: two subscriptions, two broker connections, and for
``cross_process`` brokers two separate processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from stem_core import Broker
from stem_core.clock import utcnow
from tests.specs import AdapterSpec

from .helpers import QUIET_S, Consumer, consuming, env, qname, ready_consumer, receive_one

ROOT = Path(__file__).resolve().parents[2]
# A peer is a fresh Python process importing Stem, slow to start on a loaded machine:
# this deadline only bounds a hang.
PEER_DEADLINE_S = 60.0


@pytest.fixture(autouse=True)
def _needs_broadcast(broker: Broker) -> None:
    if not broker.capabilities.broadcast:
        pytest.skip("this broker does not support broadcast")


@contextlib.asynccontextmanager
async def _ready(broker: Broker, queue: str, channel: str, **options: object) -> AsyncIterator[Consumer]:
    consumer = await ready_consumer(broker, queue, channels=[channel], **options)
    try:
        yield consumer
    finally:
        await consumer.close()


async def test_broadcast_reaches_every_subscriber(broker_factory: Callable[..., Awaitable[Broker]]) -> None:
    # Given two subscribers on separate connections and a third on another channel
    producer, first, second = await broker_factory(), await broker_factory(), await broker_factory()
    channel, other = qname("ch"), qname("other")
    async with _ready(first, qname(), channel) as one, _ready(second, qname(), channel) as two, _ready(
        second, qname(), other
    ) as bystander:
        # When one broadcast is published
        sent = env("contract.broadcast", args={"k": "v"})
        await producer.broadcast(channel, sent)
        # Then each subscriber gets its own copy, once
        copies = [await one.expect(), await two.expect()]
        for copy in copies:
            assert (copy.channel, copy.envelope.id, copy.envelope.name) == (channel, sent.id, "contract.broadcast")
            assert copy.envelope.args == {"k": "v"} and copy.is_broadcast
        await first.ack(copies[0])
        await second.ack(copies[1])
        assert await one.next(QUIET_S) is None and await two.next(QUIET_S) is None
        # The bystander listened all along (its pump runs concurrently) and got nothing
        assert [d for d in bystander.received if d.channel is not None] == []


async def test_two_subscriptions_of_one_broker_each_get_a_copy(broker: Broker) -> None:
    channel = qname("ch")
    async with _ready(broker, qname(), channel) as one, _ready(broker, qname(), channel) as two:
        sent = env("contract.broadcast")
        await broker.broadcast(channel, sent)
        assert (await one.expect()).envelope.id == sent.id
        assert (await two.expect()).envelope.id == sent.id


async def test_subscribers_joining_later_do_not_get_older_broadcasts(broker: Broker) -> None:
    channel = qname("ch")
    await broker.broadcast(channel, env("contract.before"))
    async with _ready(broker, qname(), channel) as late:
        assert await late.next(QUIET_S) is None
        sent = env("contract.after")
        await broker.broadcast(channel, sent)
        assert (await late.expect()).envelope.id == sent.id


async def test_broadcasts_do_not_count_against_prefetch_and_settle_freely(broker: Broker) -> None:
    # Given a prefetch-1 consumer holding an unacked queue delivery
    queue, channel = qname(), qname("ch")
    async with _ready(broker, queue, channel, prefetch=1) as consumer:
        await broker.publish(env(queue=queue))
        held = await consumer.expect()
        assert held.channel is None
        # When a broadcast arrives, then it is still delivered
        sent = env("contract.broadcast")
        await broker.broadcast(channel, sent)
        copy = await consumer.expect()
        assert copy.channel == channel and copy.envelope.id == sent.id
        # Every settle of a broadcast copy just settles it
        assert await broker.extend_lease(copy, 5) > utcnow()
        await broker.nack(copy)
        await broker.dead_letter(copy, reason="contract")
        await broker.ack(copy)
        assert (await broker.list_dead_letters(channel)).entries == []
        await broker.ack(held)
    # And broadcasts never leak into task queues
    assert await receive_one(broker, queue, timeout=QUIET_S) is None


async def test_broadcast_only_subscription(broker: Broker) -> None:
    channel = qname("ch")
    async with consuming(broker, [], channels=[channel]) as listener:
        # No queue to carry a readiness marker: broadcast markers until one comes through
        while True:
            await broker.broadcast(channel, env("contract.marker"))
            if await listener.next(QUIET_S) is not None:
                break
        sent = env("contract.broadcast")
        await broker.broadcast(channel, sent)
        while (copy := await listener.expect()).envelope.name == "contract.marker":
            pass
        assert copy.envelope.id == sent.id and copy.channel == channel


async def _read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), PEER_DEADLINE_S)
    return line.decode().strip()


async def test_broadcast_reaches_subscribers_in_two_processes(
    broker: Broker, broker_spec: AdapterSpec, broker_url: str, namespace: str
) -> None:
    if not broker_spec.cross_process:
        # A single-process broker cannot take part; it must say so through its flags,
        # so front ends can explain instead of timing out.
        assert broker.capabilities.cross_process is False
        return
    assert broker.capabilities.cross_process is True
    channel = qname("ch")
    queues = [qname("peer"), qname("peer")]
    peers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.contract.broadcast_peer", broker_url, namespace, queue, channel,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )
        for queue in queues
    ]
    try:
        # Given both peers subscribed (each saw a marker come back through its subscription)
        for peer, queue in zip(peers, queues):
            await broker.publish(env("contract.marker", queue=queue))
            assert await _read_line(peer) == "ready"
        # When one broadcast is published here
        sent = env("contract.broadcast")
        await broker.broadcast(channel, sent)
        # Then each process reports its own copy
        for peer in peers:
            assert await _read_line(peer) == f"got {sent.id} contract.broadcast"
            assert await asyncio.wait_for(peer.wait(), PEER_DEADLINE_S) == 0
    finally:
        for peer in peers:
            if peer.returncode is None:
                peer.kill()
                await peer.wait()
