"""SQS broker: what only this adapter has, checked against moto's server (one namespace
per test): fencing of stale receipts, delays past SQS's 15 min by re-sending, the 1 MiB
limit, dead letters as message attributes, priority bands and their share, purge, and
what each operation costs in requests.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope
from stem_core.adapters.sqs import SQSBroker
from stem_core.adapters.sqs.consume import STARVE_ROUNDS
from stem_core.clock import parse_iso, utcnow
from stem_core.envelope import Delivery
from stem_core.errors import InvalidEnvelope, LeaseLost, Unsupported
from tests.contract.helpers import assert_nothing, consuming, receive_one, stats_of
from tests.specs import AdapterSpec, require_service
from tests.specs.sqs import SPEC, raw_clients

DEADLINE_S = 15.0
MIB = 1_048_576
SETTLE_OPS = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")


@pytest.fixture
def broker_spec() -> AdapterSpec:
    require_service("moto")
    return SPEC


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    async with raw_clients() as (sqs, _):
        yield sqs


async def _url(raw: Any, broker: SQSBroker, queue: str, kind: str) -> str:
    return str((await raw.get_queue_url(QueueName=broker.names.queue(queue, kind)))["QueueUrl"])


async def _take(stream: Any, n: int) -> list[Delivery]:
    return [await asyncio.wait_for(stream.__anext__(), DEADLINE_S) for _ in range(n)]


def _ops(broker: SQSBroker, *names: str) -> int:
    return sum(broker.request_counts.get(name, 0) for name in names)


async def test_a_stale_receipt_settles_nothing_once_the_message_was_redelivered(broker: SQSBroker, raw: Any) -> None:
    # Given a delivery whose 1 s lease ran out and the redelivered copy held by someone else
    await broker.publish(Envelope(name="t", queue="fq", visibility_timeout=1.0))
    old = await receive_one(broker, "fq")
    assert old is not None
    new = await receive_one(broker, "fq", timeout=DEADLINE_S)
    assert new is not None and new.envelope.id == old.envelope.id and new.delivery_count == 2
    # Then the redelivery is a new SQS message: the old receipt's message no longer exists
    sent = broker.request_counts.get("SendMessageBatch", 0)
    # When the old holder settles every way it can
    await broker.ack(old)
    await broker.nack(old)
    await broker.dead_letter(old, reason="stale")
    with pytest.raises(LeaseLost):
        await broker.extend_lease(old, 30)
    # Then nothing was sent or removed: the new holder still has it, and no dead letter exists
    assert broker.request_counts.get("SendMessageBatch", 0) == sent
    stats = await stats_of(broker, "fq")
    assert (stats.pending, stats.inflight, stats.dead) == (0, 1, 0)
    await broker.extend_lease(new, 30)
    await broker.ack(new)
    assert (await stats_of(broker, "fq")).inflight == 0


async def test_the_delivery_count_travels_in_an_attribute_across_copies(broker: SQSBroker, raw: Any) -> None:
    # Given a task given back once: its second SQS message says one delivery came before
    sent = Envelope(name="t", queue="cq")
    await broker.publish(sent)
    first = await receive_one(broker, "cq")
    assert first is not None and (first.delivery_count, first.envelope.attempt) == (1, 0)
    await broker.nack(first)
    url = await _url(raw, broker, "cq", "p0")
    [message] = (await raw.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0))["Messages"]
    assert message["MessageAttributes"]["stem-deliveries"]["StringValue"] == "1"
    assert json.loads(message["Body"])["id"] == sent.id and json.loads(message["Body"])["attempt"] == 1
    # When Stem receives that message after an outside receive (which may have been a
    # delivery whose lease ran out), then that receive counts too
    again = await receive_one(broker, "cq")
    assert again is not None and (again.delivery_count, again.envelope.attempt) == (3, 1)
    await broker.ack(again)


async def test_renewing_many_leases_at_once_takes_one_request_per_ten(broker: SQSBroker) -> None:
    await broker.publish_many([Envelope(name="t", queue="rq") for _ in range(10)])
    stream = broker.consume("rq", prefetch=10)
    try:
        held = await _take(stream, 10)
        before = broker.request_counts.get("ChangeMessageVisibilityBatch", 0)
        deadlines = await asyncio.gather(*(broker.extend_lease(d, 60) for d in held))
        assert broker.request_counts["ChangeMessageVisibilityBatch"] == before + 1
        assert all(d > utcnow() + timedelta(seconds=50) for d in deadlines)
        await asyncio.gather(*(broker.ack(d) for d in held))
    finally:
        await stream.aclose()


async def test_a_delay_past_15_minutes_is_sent_again_until_due(broker: SQSBroker, raw: Any) -> None:
    # Given a message whose first 15 min are over but which is due in an hour (as SQS shows
    # it again after its maximum delay), and one due in a moment
    far = Envelope(name="t", queue="dq", not_before=utcnow() + timedelta(hours=1))
    soon = Envelope(name="t", queue="dq", not_before=utcnow() + timedelta(seconds=1.5))
    await broker.publish(Envelope(name="t", queue="dq"))  # makes the queue
    url = await _url(raw, broker, "dq", "p0")
    for env in (far, soon):
        await raw.send_message(QueueUrl=url, MessageBody=env.to_json())
    # When a consumer receives them before their time
    sends = broker.request_counts.get("SendMessageBatch", 0)
    async with consuming(broker, "dq", prefetch=3) as consumer:
        first = await consumer.expect()
        assert first.envelope.id not in (far.id, soon.id)
        await broker.ack(first)
        # Then only the near one is delivered, and not before it is due
        delivery = await consumer.expect(DEADLINE_S)
        assert delivery.envelope.id == soon.id and utcnow() >= soon.not_before
        await broker.ack(delivery)
    # And the far one was sent again with a delay instead of being handed out
    assert broker.request_counts["SendMessageBatch"] > sends
    stats = await stats_of(broker, "dq")
    assert (stats.pending, stats.delayed, stats.inflight) == (0, 1, 0)


async def test_a_message_over_1_mib_is_refused_before_anything_is_sent(broker: SQSBroker) -> None:
    # The envelope's JSON is exactly SQS's limit with `fill` characters of padding
    probe = Envelope(name="t", queue="bq", args={"x": ""})
    fill = MIB - len(probe.to_json().encode())
    fits = Envelope(name="t", queue="bq", args={"x": "a" * fill})
    await broker.publish(fits)
    requests = broker.requests
    too_big = Envelope(name="t", queue="bq", args={"x": "a" * (fill + 1)})
    with pytest.raises(InvalidEnvelope, match="more than the 1048576 allowed"):
        await broker.publish_many([Envelope(name="t", queue="bq"), too_big])
    assert broker.requests == requests
    # Two big messages cannot share a batch request (1 MiB in total)
    half = Envelope(name="t", queue="bq", args={"x": "b" * (fill // 2 + 10)})
    batches = broker.request_counts["SendMessageBatch"]
    await broker.publish_many([half, half.replace(id="second")])
    assert broker.request_counts["SendMessageBatch"] == batches + 2
    assert (await stats_of(broker, "bq")).pending == 3
    with pytest.raises(InvalidEnvelope, match="SNS broadcast"):
        await broker.broadcast("bch", fits)


async def test_dead_letters_carry_reason_meta_and_time_as_attributes(broker: SQSBroker, raw: Any) -> None:
    await broker.publish(Envelope(name="t", queue="xq", args={"a": 1}))
    delivery = await receive_one(broker, "xq")
    assert delivery is not None
    await broker.dead_letter(delivery, reason="boom", meta={"tries": 3})
    # Listing looks at the dead queue and leaves every message visible again
    [entry] = (await broker.list_dead_letters("xq")).entries
    assert (entry.reason, entry.meta, entry.envelope.id) == ("boom", {"tries": 3}, delivery.envelope.id)
    url = await _url(raw, broker, "xq", "dead")
    attrs = (await raw.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("1", "0")
    reply = await raw.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0)
    [message] = reply["Messages"]
    names = message["MessageAttributes"]
    assert names["stem-reason"]["StringValue"] == "boom" and json.loads(names["stem-meta"]["StringValue"]) == {"tries": 3}
    assert parse_iso(names["stem-dead-at"]["StringValue"]) == entry.dead_at
    # Replay is receive, send and delete: no move task
    assert (await broker.replay_dead_letters("xq")).count == 1
    assert "StartMessageMoveTask" not in broker.request_counts
    stats = await stats_of(broker, "xq")
    assert (stats.pending, stats.dead) == (1, 0)


async def test_an_undecodable_message_is_moved_to_the_dead_queue(broker: SQSBroker, raw: Any) -> None:
    await broker.publish(Envelope(name="t", queue="uq"))
    url = await _url(raw, broker, "uq", "p0")
    sent = await raw.send_message(QueueUrl=url, MessageBody="not a stem envelope")
    async with consuming(broker, "uq", prefetch=2) as consumer:
        good = await consumer.expect()
        assert good.envelope.name == "t"
        await broker.ack(good)
        assert await consumer.next(1.0) is None
    [entry] = (await broker.list_dead_letters("uq")).entries
    assert entry.envelope.name == "stem.undecodable" and entry.reason.startswith("undecodable message")
    assert entry.envelope.args["body"] == "not a stem envelope"
    # Its id is the SQS message's, so burying it twice (a delete after the bury that failed,
    # a lease that ran out first) still lists one dead letter (one entry per id).
    assert entry.envelope.id == f"sqs-{sent['MessageId']}"


async def test_bands_share_a_batch_and_nothing_starves(broker: SQSBroker, raw: Any) -> None:
    # Given a flood of priority 9 over a few priority 0 tasks, each in its own SQS queue
    await broker.publish_many([Envelope(name="hi", queue="pq", priority=9) for _ in range(40)])
    await broker.publish_many([Envelope(name="lo", queue="pq", priority=0) for _ in range(4)])
    for kind in ("p0", "p9"):
        assert await _url(raw, broker, "pq", kind)
    # When a consumer takes a batch of 8, then a quarter of it went to the lower band
    stream = broker.consume("pq", prefetch=8)
    try:
        batch = await _take(stream, 8)
        assert [d.envelope.name for d in batch] == ["hi"] * 6 + ["lo"] * 2
        await asyncio.gather(*(broker.ack(d) for d in batch))
    finally:
        await stream.aclose()
    # And a one-at-a-time consumer still reaches the lower band under the flood: once it
    # was passed over STARVE_ROUNDS times, it is asked first
    names = []
    async with consuming(broker, "pq") as consumer:
        while "lo" not in names:
            delivery = await consumer.expect()
            names.append(delivery.envelope.name)
            await broker.ack(delivery)
    assert names == ["hi"] * STARVE_ROUNDS + ["lo"]


async def test_purge_takes_the_ready_messages_of_every_band(broker: SQSBroker) -> None:
    await broker.publish_many([Envelope(name="t", queue="gq", priority=p) for p in (0, 0, 5)])
    await broker.publish(Envelope(name="t", queue="gq", not_before=utcnow() + timedelta(hours=1)))
    await broker.publish(Envelope(name="held", queue="gq", priority=9))
    held = await receive_one(broker, "gq")
    assert held is not None and held.envelope.name == "held"
    assert await broker.purge("gq") == 3
    # In flight stays; delayed stays too (SQS hides it until due)
    stats = await stats_of(broker, "gq")
    assert (stats.pending, stats.delayed, stats.inflight) == (0, 1, 1)
    await broker.ack(held)


async def test_requeue_and_remove_reach_only_deliveries_held_here(broker: SQSBroker, broker_factory: Any) -> None:
    await broker.publish_many([Envelope(name="t", queue="hq", id=f"m{i}") for i in range(2)])
    held = await receive_one(broker, "hq")
    assert held is not None
    other = await broker_factory()
    with pytest.raises(Unsupported, match="only deliveries this process holds"):
        await other.requeue("hq", [held.envelope.id])
    with pytest.raises(Unsupported, match="cannot reach a message by id"):
        await broker.remove("hq", ["m0", "m1"])
    assert await broker.remove("hq", [held.envelope.id]) == 1
    stats = await stats_of(broker, "hq")
    assert (stats.pending, stats.inflight) == (1, 0)
    with pytest.raises(Unsupported, match="peek"):
        await broker.peek("hq")


async def test_a_steady_drain_costs_at_most_half_a_request_per_task(broker: SQSBroker) -> None:
    # Given 100 tasks published in bulk: 10 batch requests
    sends = broker.request_counts.get("SendMessageBatch", 0)
    await broker.publish_many([Envelope(name="t", queue="sq", args={"i": i}) for i in range(100)])
    assert broker.request_counts["SendMessageBatch"] == sends + 10
    # When a consumer with prefetch 10 takes them ten at a time and acks each ten together
    before = _ops(broker, *SETTLE_OPS)
    stream = broker.consume("sq", prefetch=10)
    try:
        for _ in range(10):
            held = await _take(stream, 10)
            await asyncio.gather(*(broker.ack(d) for d in held))
        await broker.parts.batches.drain()
    finally:
        await stream.aclose()
    # Then each ten cost one receive and one delete
    assert _ops(broker, *SETTLE_OPS) - before == 20
    assert (await stats_of(broker, "sq")).inflight == 0


async def test_names_too_long_for_sqs_are_hashed_and_listed_by_their_tag(broker: SQSBroker, raw: Any) -> None:
    queue = "long." + "x" * 150
    await broker.publish(Envelope(name="t", queue=queue))
    assert broker.names.is_hashed(queue)
    assert queue in await broker.list_queues()
    delivery = await receive_one(broker, queue)
    assert delivery is not None and delivery.queue == queue
    await broker.ack(delivery)
    await assert_nothing(broker, queue)
