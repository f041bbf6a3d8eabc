"""``wire.publish_batch`` uses aiormq internals: an aiormq upgrade that changes them must
fail here. Each case also checks the channel stays in step with the server (delivery
tags, returned messages) after a batch."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from stem_core.adapters.rabbitmq import codec
from stem_core.adapters.rabbitmq.publish import Outgoing
from stem_core.adapters.rabbitmq.wire import publish_batch
from stem_core.envelope import Envelope
from tests.specs import require_service
from tests.specs.rabbitmq import RABBITMQ_TEST_URL

CONFIRM_DEADLINE_S = 30.0
INTERNALS = ("lock", "delivery_tag", "confirmations", "message_id_delivery_tag", "create_future", "_split_body",
             "write_queue", "number")


@pytest.fixture
async def channel(namespace: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    require_service("rabbitmq")
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    opened = await connection.channel(publisher_confirms=True, on_return_raises=False)  # as Stem opens it
    await opened.queue_declare(f"wire-{namespace}", auto_delete=False, durable=False)
    yield opened
    await opened.queue_delete(f"wire-{namespace}")
    await connection.close()


def _outgoing(queue: str, i: int) -> Outgoing:
    envelope = Envelope(name="wire", args={"i": i}, queue="wire")
    return Outgoing("", queue, codec.body(envelope), codec.properties(envelope), "wire")


async def test_the_internals_are_there_and_a_batch_is_confirmed(channel: aiormq.abc.AbstractChannel,
                                                                 namespace: str) -> None:
    assert all(hasattr(channel, name) for name in INTERNALS)
    futures = await publish_batch(channel, [_outgoing(f"wire-{namespace}", i) for i in range(50)])
    results = await asyncio.wait_for(asyncio.gather(*futures), CONFIRM_DEADLINE_S)
    assert all(isinstance(r, Basic.Ack) for r in results)
    assert (await channel.queue_declare(f"wire-{namespace}", passive=True)).message_count == 50


async def test_an_unroutable_message_comes_back_alone_and_the_tags_stay_in_step(
    channel: aiormq.abc.AbstractChannel, namespace: str
) -> None:
    items = [_outgoing(f"wire-{namespace}", 0), _outgoing("no-such-queue-anywhere", 1), _outgoing(f"wire-{namespace}", 2)]
    results = await asyncio.wait_for(asyncio.gather(*await publish_batch(channel, items)), CONFIRM_DEADLINE_S)
    assert isinstance(results[0], Basic.Ack) and isinstance(results[2], Basic.Ack)
    assert isinstance(results[1], DeliveredMessage)
    # aiormq's own publish after a batch is confirmed (its delivery tag matches the server's)
    plain = await channel.basic_publish(b"after", routing_key=f"wire-{namespace}")
    assert isinstance(plain, Basic.Ack)


async def test_a_batch_on_a_closed_channel_sends_nothing(channel: aiormq.abc.AbstractChannel, namespace: str) -> None:
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        closed = await connection.channel(publisher_confirms=True)
        await closed.close()
        with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
            await publish_batch(closed, [_outgoing(f"wire-{namespace}", 0)])
    finally:
        await connection.close()
    assert (await channel.queue_declare(f"wire-{namespace}", passive=True)).message_count == 0
