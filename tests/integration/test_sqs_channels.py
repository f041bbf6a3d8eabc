"""SQS broadcast through SNS, against moto: a topic per channel, a raw-delivery
subscriber queue per subscription that goes away with it, stale subscribers reaped,
and the ``broadcast`` capability off (with its reason) where SNS cannot be used.
"""

from __future__ import annotations

import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from stem_core import Envelope, connect_backend
from stem_core.adapters.sqs import SQSBroker
from stem_core.adapters.sqs.names import TAG_SEEN
from stem_core.ops import Ops
from stem_core.errors import Unsupported
from tests.contract.helpers import ready_consumer
from tests.specs import AdapterSpec, require_service
from tests.specs.sqs import SPEC, raw_clients, sqs_url

BrokerFactory = Callable[..., Awaitable[SQSBroker]]
STALE_SEEN_S = 3600


@pytest.fixture
def broker_spec() -> AdapterSpec:
    require_service("moto")
    return SPEC


@pytest.fixture
async def raw() -> AsyncIterator[tuple[Any, Any]]:
    async with raw_clients() as clients:
        yield clients


async def _subscriptions(sns: Any, topic: str) -> list[dict[str, Any]]:
    return list((await sns.list_subscriptions_by_topic(TopicArn=topic)).get("Subscriptions") or [])


async def _orphan(broker: SQSBroker, raw: tuple[Any, Any], topic: str, token: str, seen: float) -> str:
    """A subscriber queue and subscription as a killed process leaves them."""
    sqs, sns = raw
    url = (await sqs.create_queue(QueueName=broker.names.subscriber(token), tags={TAG_SEEN: str(int(seen))}))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(url)


async def test_a_subscription_is_a_raw_sns_subscriber_queue_removed_on_close(broker: SQSBroker,
                                                                             raw: tuple[Any, Any]) -> None:
    sqs, sns = raw
    consumer = await ready_consumer(broker, "bq", channels=["news"])
    topic = await broker.parts.channels.topic("news")
    [subscription] = await _subscriptions(sns, topic)
    attrs = (await sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"]))["Attributes"]
    assert attrs["RawMessageDelivery"] == "true" and attrs["Protocol"] == "sqs"
    queue_name = subscription["Endpoint"].rpartition(":")[2]
    assert queue_name.startswith(broker.names.subscriber_prefix)
    # One broadcast reaches the subscriber as the envelope itself
    sent = Envelope(name="news.flash", args={"k": 1})
    await broker.broadcast("news", sent)
    copy = await consumer.expect()
    assert (copy.channel, copy.envelope.id, copy.envelope.args) == ("news", sent.id, {"k": 1})
    await consumer.close()
    # Closing removed both the subscription and its queue
    assert await _subscriptions(sns, topic) == []
    listed = (await sqs.list_queues(QueueNamePrefix=queue_name)).get("QueueUrls") or []
    assert listed == []


async def test_stale_subscribers_are_reaped_when_someone_subscribes(broker: SQSBroker, raw: tuple[Any, Any]) -> None:
    # Given the leftovers of a killed subscriber (unseen for an hour) and a live-looking one
    topic = await broker.parts.channels.topic("ops")
    stale = await _orphan(broker, raw, topic, "deadbeef", time.time() - STALE_SEEN_S)
    fresh = await _orphan(broker, raw, topic, "cafef00d", time.time())
    # When a new subscriber joins
    consumer = await ready_consumer(broker, "rq", channels=["ops"])
    try:
        # Then the stale queue and its subscription are gone; the fresh one stays
        sqs, sns = raw
        endpoints = {s["Endpoint"].rpartition(":")[2] for s in await _subscriptions(sns, topic)}
        assert broker.names.subscriber("deadbeef") not in endpoints
        assert broker.names.subscriber("cafef00d") in endpoints
        names = {u.rpartition("/")[2] for u in (await sqs.list_queues(QueueNamePrefix=broker.names.base))["QueueUrls"]}
        assert stale.rpartition("/")[2] not in names and fresh.rpartition("/")[2] in names
    finally:
        await consumer.close()


async def test_a_subscription_left_without_its_queue_does_not_stop_broadcasts(broker: SQSBroker,
                                                                              raw: tuple[Any, Any]) -> None:
    # Given a subscription whose queue was deleted (moto then refuses every publish)
    sqs, _ = raw
    topic = await broker.parts.channels.topic("alerts")
    await sqs.delete_queue(QueueUrl=await _orphan(broker, raw, topic, "0badf00d", time.time()))
    consumer = await ready_consumer(broker, "aq", channels=["alerts"])
    try:
        # When a broadcast goes out, then the live subscriber gets it once
        sent = Envelope(name="alert")
        await broker.broadcast("alerts", sent)
        assert (await consumer.expect()).envelope.id == sent.id
        assert await consumer.next(1.0) is None
    finally:
        await consumer.close()


async def test_without_sns_broadcast_is_off_and_says_why(namespace: str, tmp_path: Any) -> None:
    # sns=false: off by choice
    off = SQSBroker.from_url(sqs_url(sns="false"), namespace=namespace)
    await off.connect()
    try:
        assert off.capabilities.broadcast is False and "sns=false" in (off.broadcast_unavailable or "")
        with pytest.raises(Unsupported, match="does not support broadcast"):
            await off.broadcast("x", Envelope(name="t"))
        backend = await connect_backend(f"sqlite://{tmp_path / 'r.db'}", namespace=namespace)
        try:
            with pytest.raises(Unsupported, match="control commands cannot reach workers"):
                await Ops(off, backend).broadcast("ping", timeout=1)
        finally:
            await backend.close()
    finally:
        await off.close()
    # An SNS endpoint that does not answer: off, with the reason, while SQS works
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = SQSBroker.from_url(sqs_url(sns_endpoint=f"http://127.0.0.1:{port}", timeout="2", retries="1"),
                                     namespace=namespace)
    await unreachable.connect()
    try:
        assert unreachable.capabilities.broadcast is False
        assert "not reachable" in (unreachable.broadcast_unavailable or "")
        assert SQSBroker.capabilities.broadcast is True  # the class keeps its default
        await unreachable.publish(Envelope(name="t", queue="still-works"))
    finally:
        await unreachable.close()
