"""Delays without plugins: a fixed set of 32 levels per queue, never early, late by one
dead-letter hop per set bit of the delay (names.py has the scheme).

The bound is tested structurally, not with a stopwatch: a delayed message's ``x-death``
headers name every level queue it waited in, and those are exactly the set bits of its
delay, so its lateness is at most that many hops (the documented bound).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, AsyncIterator

import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic

from stem_core import Broker, Envelope, connect_broker
from stem_core.adapters.rabbitmq.names import LEVELS, MAX_DELAY_MS, RabbitMQNames, delay_ms, levels_of
from stem_core.clock import utcnow
from tests.contract.helpers import consuming, stats_of
from tests.specs import require_service
from tests.specs.rabbitmq import RABBITMQ_TEST_URL, delete_namespace, server_names

DEADLINE_S = 30.0
# Delays with few and many set bits, from 1 ms to a few seconds.
DELAYS_MS = (1, 37, 300, 1023, 2500)


@pytest.fixture
async def broker(namespace: str) -> AsyncIterator[Broker]:
    require_service("rabbitmq")
    opened = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace)
    yield opened
    await opened.close()
    await delete_namespace(RABBITMQ_TEST_URL, namespace)


@given(st.integers(min_value=1, max_value=MAX_DELAY_MS))
def test_the_levels_of_a_delay_add_up_to_it_exactly(ms: int) -> None:
    assert sum(2**k for k in levels_of(ms)) == ms
    assert all(0 <= k < LEVELS for k in levels_of(ms))


@given(st.integers(min_value=-10**6, max_value=60 * 86400 * 10**6))
def test_a_delay_is_rounded_up_to_the_millisecond_and_capped(micros: int) -> None:
    now = utcnow()
    ms = delay_ms(now + timedelta(microseconds=micros), now)
    assert ms == (0 if micros <= 0 else min(MAX_DELAY_MS, -(-micros // 1000)))


def test_routing_keys_carry_the_bits_then_the_queue() -> None:
    names = RabbitMQNames("ns")
    key = names.delay_key("emails.high", 5)
    words = key.split(".")
    assert len(words) == LEVELS + 1 and words[-1] == names.qhash("emails.high")
    assert "".join(words[:-1]) == format(5, f"0{LEVELS}b")


async def _raw_deliveries(namespace: str, queue: str, count: int) -> list[DeliveredMessage]:
    """``count`` messages of ``queue``'s work queue, read with plain AMQP (headers and all)."""
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        channel = await connection.channel()
        got: list[DeliveredMessage] = []
        done = asyncio.Event()

        async def on_message(message: DeliveredMessage) -> None:
            got.append(message)
            await channel.basic_ack(message.delivery_tag or 0)
            if len(got) == count:
                done.set()

        await channel.basic_consume(RabbitMQNames(namespace).work(queue), on_message)
        await asyncio.wait_for(done.wait(), DEADLINE_S)
        return got
    finally:
        await connection.close()


async def test_a_delayed_message_waits_in_exactly_the_levels_of_its_set_bits(broker: Broker, namespace: str) -> None:
    # Given messages delayed by amounts with few and many set bits
    sent: dict[str, int] = {}
    for ms in DELAYS_MS:
        envelope = Envelope(name="delay.probe", queue="levels", not_before=utcnow() + timedelta(milliseconds=ms))
        sent[envelope.id] = ms
        await broker.publish(envelope)
    # When they arrive in the queue
    names = RabbitMQNames(namespace)
    levels = {names.level("levels", k): k for k in range(LEVELS)}
    for message in await _raw_deliveries(namespace, "levels", len(DELAYS_MS)):
        envelope = Envelope.from_json(message.body)
        # The delay the publisher planned (the time left at publish) is in the routing key
        planned = int("".join((message.routing_key or "").split(".")[:LEVELS]), 2)
        deaths: list[dict[str, Any]] = message.header.properties.headers["x-death"]
        waited = sorted(levels[str(d["queue"])] for d in deaths if str(d["queue"]) in levels)
        # Then it waited in one level per set bit of that delay, no more: each level is one
        # dead-letter hop, so it is late by at most that many hops; and never early, since
        # the levels add up to the whole time left when it was published
        assert 1 <= planned <= sent[envelope.id]
        assert waited == levels_of(planned)
        assert all(str(d["reason"]) == "expired" for d in deaths)


async def test_delayed_messages_are_never_handed_out_early(broker: Broker) -> None:
    # Given a consumer waiting and messages delayed by various amounts
    async with consuming(broker, "early", prefetch=len(DELAYS_MS)) as consumer:
        sent = []
        for ms in DELAYS_MS:
            envelope = Envelope(name="delay.probe", queue="early", not_before=utcnow() + timedelta(milliseconds=ms))
            await broker.publish(envelope)
            sent.append(envelope)
        # Then each one arrives, and not before its not_before
        for _ in sent:
            delivery = await consumer.expect(DEADLINE_S)
            assert utcnow() >= delivery.envelope.not_before  # type: ignore[operator]
            await broker.ack(delivery)
    assert {d.envelope.id for d in consumer.received} == {e.id for e in sent}


async def test_a_message_that_arrives_early_waits_again(broker: Broker, namespace: str) -> None:
    # Given a message put straight into the work queue a second before its not_before
    # (another program, a clock running ahead, or a wait past the 49-day ceiling)
    envelope = Envelope(name="delay.early", queue="guard", not_before=utcnow() + timedelta(seconds=1))
    await broker.publish(Envelope(name="delay.declare", queue="guard"))  # declares the queue
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        channel = await connection.channel()
        await channel.basic_publish(envelope.to_json().encode(), routing_key=RabbitMQNames(namespace).work("guard"),
                                    properties=Basic.Properties(delivery_mode=2))
    finally:
        await connection.close()
    # Then a consumer gets it only once it is due
    async with consuming(broker, "guard", prefetch=2) as consumer:
        first = await consumer.expect(DEADLINE_S)
        assert first.envelope.name == "delay.declare"
        await broker.ack(first)
        late = await consumer.expect(DEADLINE_S)
        assert late.envelope.id == envelope.id and utcnow() >= envelope.not_before  # type: ignore[operator]
        await broker.ack(late)


async def test_many_distinct_delays_use_the_same_32_level_queues(broker: Broker, namespace: str) -> None:
    # Given forty messages each delayed by a different amount
    for i in range(40):
        due = utcnow() + timedelta(seconds=600 + i * 7.3)
        await broker.publish(Envelope(name="delay.many", queue="many", not_before=due))
    # Then they wait in the queue's fixed levels: no queue per delay value
    queues = await asyncio.to_thread(server_names, "queues", f"stem.{namespace}.")
    assert sorted(queues) == sorted([RabbitMQNames(namespace).work("many")]
                                    + [RabbitMQNames(namespace).level("many", k) for k in range(LEVELS)])
    assert (await stats_of(broker, "many")).delayed == 40
    assert await broker.purge("many") == 40
