"""The RabbitMQ adapter beyond the contract suite: what it stores on the server (dead
letters in headers, reply queues that expire), poison bodies, leases lost with their
channel, and the one aio-pika internal it relies on."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.request
from pathlib import Path
from typing import AsyncIterator

import aiormq
import pytest
from pamqp.commands import Basic

from stem_core import Broker, Envelope, connect_broker
from stem_core.adapters.rabbitmq.connection import RabbitMQConnection
from stem_core.adapters.rabbitmq.names import RabbitMQNames
from stem_core.adapters.rabbitmq.topology import REPLY_QUEUE_EXPIRES_MS, REPLY_QUEUE_PREFIX
from stem_core.adapters.rabbitmq.url import parse_url
from stem_core.control.protocol import REPLY_QUEUE_PREFIX as CONTROL_REPLY_PREFIX
from stem_core.errors import LeaseLost
from tests.contract.helpers import assert_nothing, consuming, receive_one, stats_of
from tests.specs import require_service
from tests.specs.rabbitmq import MANAGEMENT_URL, RABBITMQ_TEST_URL, delete_namespace
from tests.support import eventually

DEADLINE_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def broker(namespace: str) -> AsyncIterator[Broker]:
    require_service("rabbitmq")
    opened = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None)
    yield opened
    await opened.close()
    await delete_namespace(RABBITMQ_TEST_URL, namespace)


async def test_the_aio_pika_internal_stem_uses_is_there() -> None:
    # connection.py opens plain aiormq channels on aio-pika's current transport; an
    # aio-pika upgrade that moves it must fail here, not in production.
    require_service("rabbitmq")
    conn = RabbitMQConnection(parse_url(RABBITMQ_TEST_URL, {}), name="stem test")
    await conn.open()
    try:
        underlying = await conn.underlying()
        assert isinstance(underlying, aiormq.Connection) and not underlying.is_closed
        channel = await conn.channel()
        assert not channel.is_closed
        await channel.close()
    finally:
        await conn.close()


def test_reply_queues_are_named_as_the_control_plane_names_them() -> None:
    assert REPLY_QUEUE_PREFIX == CONTROL_REPLY_PREFIX


async def test_a_reply_queue_expires_once_unused_and_a_work_queue_does_not(broker: Broker, namespace: str) -> None:
    require_service("rabbitmq-management")
    await broker.publish(Envelope(name="t", queue=REPLY_QUEUE_PREFIX + "abc"))
    await broker.publish(Envelope(name="t", queue="work"))
    names = RabbitMQNames(namespace)
    token = base64.b64encode(b"guest:guest").decode()

    def arguments(amqp_name: str) -> dict[str, object]:
        url = f"{MANAGEMENT_URL}/api/queues/%2F/{urllib.request.quote(amqp_name, safe='')}"
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["arguments"]

    reply = await asyncio.to_thread(arguments, names.work(REPLY_QUEUE_PREFIX + "abc"))
    work = await asyncio.to_thread(arguments, names.work("work"))
    assert reply["x-expires"] == REPLY_QUEUE_EXPIRES_MS and "x-expires" not in work
    assert work["x-max-priority"] == 9 and work["x-queue-type"] == "classic"


async def test_a_dead_letter_keeps_its_reason_meta_and_time_in_headers(broker: Broker, namespace: str) -> None:
    # Given a delivery dead-lettered with a reason and meta
    sent = Envelope(name="t", queue="dl", args={"n": 1})
    await broker.publish(sent)
    delivery = await receive_one(broker, "dl")
    assert delivery is not None
    await broker.dead_letter(delivery, reason="boom", meta={"error": "ValueError", "tries": 3})
    # Then the dead queue holds the envelope as it died, the rest in headers
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        channel = await connection.channel()
        got = await channel.basic_get(RabbitMQNames(namespace).dead("dl"))  # not acked: back on close
        headers = got.header.properties.headers
        assert Envelope.from_json(got.body).to_dict() == sent.to_dict()
        assert headers["x-stem-reason"] == "boom"
        assert json.loads(headers["x-stem-meta"]) == {"error": "ValueError", "tries": 3}
        assert str(headers["x-stem-dead-at"]).endswith("Z")
        assert got.header.properties.delivery_mode == 2
    finally:
        await connection.close()
    entry = await broker.get_dead_letter("dl", sent.id)
    assert entry is not None and (entry.reason, entry.meta) == ("boom", {"error": "ValueError", "tries": 3})


async def test_a_body_that_is_not_an_envelope_is_dead_lettered_unseen(broker: Broker, namespace: str) -> None:
    # Given a message another program put in the queue
    await broker.publish(Envelope(name="t.declare", queue="poison"))
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        channel = await connection.channel()
        await channel.basic_publish(b"not json at all", routing_key=RabbitMQNames(namespace).work("poison"),
                                    properties=Basic.Properties(delivery_mode=2))
    finally:
        await connection.close()
    # Then consumers only ever see the good one, and the other is a dead letter
    async with consuming(broker, "poison", prefetch=2) as consumer:
        good = await consumer.expect()
        assert good.envelope.name == "t.declare"
        await broker.ack(good)
        assert await consumer.next(0.5) is None

    async def dead() -> object:
        return (await broker.list_dead_letters("poison")).entries

    [entry] = await eventually(dead, message="the poison message dead-lettered")
    assert entry.reason == "invalid-envelope" and entry.envelope.meta["raw"] == "not json at all"


def _api(method: str, path: str) -> object:
    token = base64.b64encode(b"guest:guest").decode()
    request = urllib.request.Request(f"{MANAGEMENT_URL}{path}", method=method, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


async def test_a_lease_lost_with_its_connection_is_fenced_and_redelivered(broker: Broker, namespace: str) -> None:
    require_service("rabbitmq-management")
    # Given a delivery held by a broker whose connection the server then closes (as it
    # does after missed heartbeats; consumer_timeout closes the channel the same way)
    await broker.publish(Envelope(name="t", queue="lost"))
    held = await receive_one(broker, "lost")
    assert held is not None

    async def listed() -> list[str]:  # the API lists a new connection within a few seconds
        connections = await asyncio.to_thread(_api, "GET", "/api/connections?columns=name,client_properties")
        return [c["name"] for c in connections  # type: ignore[union-attr]
                if str(c["client_properties"].get("connection_name", "")).startswith(f"stem {namespace} ")]

    for name in await eventually(listed, timeout=DEADLINE_S, message="the broker's connection in the API"):
        await asyncio.to_thread(_api, "DELETE", f"/api/connections/{urllib.request.quote(name, safe='')}")
    other = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None)
    try:
        # Then another consumer gets the message again at once (not after the 30 s lease), counted
        again = await receive_one(other, "lost", timeout=broker.lease_seconds / 2)
        assert again is not None and again.envelope.id == held.envelope.id and again.delivery_count == 2
        # And the old receipt holds nothing
        with pytest.raises(LeaseLost):
            await broker.extend_lease(held, 30)
        await broker.ack(held)  # a no-op
        await other.ack(again)
        await assert_nothing(other, "lost")
        # And the broker whose connection was closed works again after reconnecting
        await broker.publish(Envelope(name="t", queue="lost"))
        back = await receive_one(broker, "lost", timeout=DEADLINE_S)
        assert back is not None
        await broker.ack(back)
        assert (await stats_of(other, "lost")).pending == 0
    finally:
        await other.close()


async def test_a_settle_whose_frame_cannot_be_written_gives_up_and_the_message_comes_back(
        broker: Broker, namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Given a held delivery whose ack frame can never be written (a connection reset under
    # a frozen process leaves aiormq's write queue full and its writer gone: a full-profile
    # chaos run saw a worker stuck in 30 such acks, and deaf to SIGTERM)
    from stem_core.adapters.rabbitmq import leases

    await broker.publish(Envelope(name="t", queue="stuck"))
    await broker.publish(Envelope(name="t", queue="stuck"))
    stream = broker.consume("stuck", prefetch=1)
    held = await asyncio.wait_for(stream.__anext__(), DEADLINE_S)
    never = asyncio.Event()

    async def unwritable(self: object, *args: object, **kwargs: object) -> None:
        await never.wait()

    monkeypatch.setattr(leases, "SETTLE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(aiormq.Channel, "basic_ack", unwritable)
    # When the worker acks it, the ack gives up (a warning), instead of waiting for ever
    with caplog.at_level("WARNING", logger="stem.rabbitmq"):
        await asyncio.wait_for(broker.ack(held), 5)
    assert any("could not ack message" in r.getMessage() and held.envelope.id in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    # And the channel it could not be written to is closed: the server takes the message
    # back, and the subscription goes on on a new channel, with its slot free
    got = {}
    for _ in range(2):
        delivery = await asyncio.wait_for(stream.__anext__(), DEADLINE_S)
        got[delivery.envelope.id] = delivery.delivery_count
        await broker.ack(delivery)
    await stream.aclose()
    assert got[held.envelope.id] == 2 and len(got) == 2
    await assert_nothing(broker, "stuck")


async def test_a_lease_renewed_while_its_expiry_is_checked_stays_with_its_holder(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a holder whose lease ran out while its event loop was busy (a loaded host), so
    # that the adapter's lease keeper and the worker's renewal come due together
    require_service("rabbitmq")
    broker = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None, lease_seconds=0.5)
    other = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None)
    try:
        await broker.publish(Envelope(name="t", queue="renewed"))
        async with consuming(other, "renewed") as rival:  # someone who could take it back
            stream = broker.consume("renewed", prefetch=1)
            held = await asyncio.wait_for(stream.__anext__(), DEADLINE_S)
            conn = broker._conn  # type: ignore[attr-defined]
            checking, answer = asyncio.Event(), asyncio.Event()
            passive = conn.passive

            async def slow_passive(queue: str) -> object:  # the keeper asks whether anyone consumes
                checking.set()
                await answer.wait()
                return await passive(queue)

            monkeypatch.setattr(conn, "passive", slow_passive)
            await asyncio.wait_for(checking.wait(), DEADLINE_S)
            # When the holder renews while the keeper is still asking
            await broker.extend_lease(held, 30)
            answer.set()
            # Then the renewal holds: nobody else gets the task, and the holder's ack settles it
            assert await rival.next(1.0) is None
            await broker.ack(held)
            await stream.aclose()
            assert await rival.next(0.5) is None
        assert (await stats_of(other, "renewed")).pending == 0
    finally:
        await broker.close()
        await other.close()
        await delete_namespace(RABBITMQ_TEST_URL, namespace)


HUNG_HOLDER = """
import asyncio, sys, time
from stem_core import connect_broker

async def main():
    broker = await connect_broker(sys.argv[1], namespace=sys.argv[2], lease_seconds=600)
    stream = broker.consume(["hung"])
    await stream.__anext__()
    print("holding", flush=True)
    time.sleep(60)  # an event loop blocked by sync code: no AMQP heartbeats go out

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_holder_whose_event_loop_hangs_loses_its_deliveries_after_the_heartbeat(namespace: str) -> None:
    # Given a process holding a delivery (10-minute lease), whose event loop then blocks
    require_service("rabbitmq")
    producer = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None)
    url = f"{RABBITMQ_TEST_URL}?heartbeat=1"
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", HUNG_HOLDER, url, namespace,
                                                  stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        await producer.publish(Envelope(name="t", queue="hung"))
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), DEADLINE_S)).strip() == b"holding"
        # Then the server drops its connection after missed heartbeats, long before the
        # lease would end, and another consumer gets the message, counted
        again = await receive_one(producer, "hung", timeout=DEADLINE_S)
        assert again is not None and again.delivery_count == 2
        assert holder.returncode is None  # still alive, just not answering
        await producer.ack(again)
    finally:
        holder.kill()
        await holder.wait()
        await producer.close()
        await delete_namespace(RABBITMQ_TEST_URL, namespace)


async def test_a_queue_deleted_behind_its_back_is_declared_again(broker: Broker, namespace: str) -> None:
    # Given a queue this process declared, deleted since by someone else
    await broker.publish(Envelope(name="t", queue="gone"))
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        channel = await connection.channel()
        await channel.queue_delete(RabbitMQNames(namespace).work("gone"))
    finally:
        await connection.close()
    # When it publishes there again, then the message comes back unroutable, the queue is
    # declared again and the message sent again: nothing is lost
    await broker.publish(Envelope(name="t", queue="gone"))
    await broker.publish_many([Envelope(name="t", queue="gone") for _ in range(2)])
    assert (await stats_of(broker, "gone")).pending == 3
