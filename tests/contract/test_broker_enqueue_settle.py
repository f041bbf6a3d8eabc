"""Broker contract with a result backend on the same store: ``Broker.enqueue`` (queued
statuses, then publish) and ``Broker.ack_with_status`` (final status, then ack).

Adapters may do each in one round trip when the backend shares their server
(``_enqueue_with``/``_ack_with``); these cases hold whichever path runs, for every adapter
with a backend: broker and backend open on the same URL and namespace, as an app would.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, NamedTuple

import pytest

from stem_core import Broker, ResultBackend, TaskState, connect_backend, connect_broker
from stem_core.contract.broker import queued_meta
from tests.specs import BACKEND_SPECS, AdapterSpec, require_service
from tests.support import eventually

from .helpers import DELIVERY_DEADLINE_S, assert_nothing, counts, env, known, qname, receive_one, stats_of
from .test_backend import watching


class Pair(NamedTuple):
    broker: Broker
    backend: ResultBackend
    url: str
    spec: AdapterSpec


@pytest.fixture(params=BACKEND_SPECS, ids=lambda s: s.id)
async def pair(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> AsyncIterator[Pair]:
    """A broker and a result backend on the same store and namespace."""
    spec: AdapterSpec = request.param
    require_service(spec.service)
    url = spec.url(tmp_path)
    broker = await connect_broker(url, namespace=namespace, **spec.broker_options)
    backend = await connect_backend(url, namespace=namespace, **spec.backend_options)
    try:
        yield Pair(broker, backend, url, spec)
    finally:
        await broker.close()
        await backend.close()
        if spec.cleanup is not None:
            await spec.cleanup(url, namespace)


async def test_enqueue_writes_the_queued_status_and_publishes(pair: Pair) -> None:
    broker, backend = pair.broker, pair.backend
    queue = qname()
    sent = env(queue=queue, max_retries=4)
    await broker.enqueue([sent], backend)
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.QUEUED
    assert status.meta == queued_meta(sent) and status.attempt == 0 and status.payload is None
    delivery = await receive_one(broker, queue)
    assert delivery is not None and delivery.envelope.id == sent.id
    await broker.ack(delivery)


async def test_enqueue_many_writes_every_status_and_publishes_all(pair: Pair) -> None:
    broker, backend = pair.broker, pair.backend
    queue = qname()
    sent = [env(queue=queue, args={"i": i}) for i in range(5)]
    await broker.enqueue(sent, backend)
    for envelope in sent:
        status = await backend.get_status(envelope.id)
        assert status is not None and status.state == TaskState.QUEUED and status.meta == queued_meta(envelope)
    stats = await stats_of(broker, queue)
    assert stats.pending == 5
    if stats.enqueued_total is not None:
        assert stats.enqueued_total == 5


async def test_enqueue_of_nothing_writes_nothing(pair: Pair) -> None:
    broker, backend = pair.broker, pair.backend
    await broker.enqueue([], backend)
    assert await backend.list_statuses() == []


async def test_ack_with_status_stores_the_status_and_acks(pair: Pair) -> None:
    broker, backend = pair.broker, pair.backend
    queue = qname()
    sent = env(queue=queue)
    await broker.enqueue([sent], backend)
    queued = await backend.get_status(sent.id)
    assert queued is not None
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload={"n": [1, 2]}, attempt=0,
                                 meta={"task": sent.name, "queue": queue})
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.SUCCEEDED
    assert status.payload == {"n": [1, 2]} and status.meta == {"task": sent.name, "queue": queue}
    assert status.created_at == queued.created_at  # the same task: created_at is kept
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (0, 0)
    if stats.completed_total is not None:
        assert stats.completed_total == 1
    await assert_nothing(broker, queue)


async def test_ack_with_status_of_a_stale_receipt_stores_the_status_but_acks_nothing(
    pair: Pair,
) -> None:
    # Given a delivery taken back (requeue fences it) and handed to a new holder
    broker, backend = pair.broker, pair.backend
    queue = qname()
    sent = env(queue=queue)
    await broker.enqueue([sent], backend)
    old = await receive_one(broker, queue)
    assert old is not None
    assert await broker.requeue(queue, [sent.id]) == 1
    new = await receive_one(broker, queue)
    assert new is not None and new.envelope.id == sent.id
    # When the old holder settles with a status
    await broker.ack_with_status(old, backend, TaskState.CANCELLED, attempt=0, meta={"cancel_reason": "late"})
    # Then the status is stored (as set_status then ack would), but the new holder keeps the message
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.CANCELLED
    stats = await stats_of(broker, queue)
    assert counts(stats, "pending", "inflight") == (0, 1)
    await broker.ack_with_status(new, backend, TaskState.SUCCEEDED, payload=1)
    assert known((await stats_of(broker, queue)).inflight) == 0
    assert (await backend.get_status(sent.id)).state == TaskState.SUCCEEDED  # type: ignore[union-attr]


async def test_ack_with_status_rejects_a_non_json_payload_and_writes_nothing(
    pair: Pair,
) -> None:
    broker, backend = pair.broker, pair.backend
    queue = qname()
    sent = env(queue=queue)
    await broker.enqueue([sent], backend)
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    with pytest.raises(ValueError):
        await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload=object())
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.QUEUED
    assert known((await stats_of(broker, queue)).inflight) == 1  # still held: nothing was acked
    await broker.ack(delivery)


async def test_statuses_of_enqueue_and_ack_with_status_reach_a_watcher_elsewhere(pair: Pair) -> None:
    # The watcher has its own backend connection (another process's view, where the adapter crosses processes)
    broker, backend = pair.broker, pair.backend
    other = await connect_backend(pair.url, namespace=backend.namespace, **pair.spec.backend_options)
    try:
        queue = qname()
        sent = env(queue=queue)
        async with watching(other, sent.id) as watch:
            await broker.enqueue([sent], backend)
            queued = await watch.next()
            assert queued.state == TaskState.QUEUED
            delivery = await receive_one(broker, queue)
            assert delivery is not None
            await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload="done")
            done = await watch.next()
            assert done.state == TaskState.SUCCEEDED and done.payload == "done"
            assert done.created_at == queued.created_at
    finally:
        await other.close()


async def test_enqueue_many_keeps_the_last_of_a_repeated_id(pair: Pair) -> None:
    # Two envelopes with one id in a batch: the later queued status wins, both are published
    broker, backend = pair.broker, pair.backend
    queue, other_queue = qname(), qname()
    first = env(queue=queue)
    second = env(queue=other_queue, id=first.id)
    await broker.enqueue([first, second], backend)
    status = await eventually(lambda: backend.get_status(first.id), timeout=DELIVERY_DEADLINE_S)
    assert status.meta == queued_meta(second)
    assert (await stats_of(broker, queue)).pending + (await stats_of(broker, other_queue)).pending == 2


async def test_enqueue_keeps_each_envelopes_attempt_in_its_queued_status(pair: Pair) -> None:
    # A re-enqueued envelope (attempt 2) is queued at attempt 2, alone or in a batch
    broker, backend = pair.broker, pair.backend
    queue = qname()
    again = env(queue=queue, attempt=2)
    await broker.enqueue([again], backend)
    batch = [env(queue=queue, attempt=3), env(queue=queue)]
    await broker.enqueue(batch, backend)
    for envelope in (again, *batch):
        status = await backend.get_status(envelope.id)
        assert status is not None and status.state == TaskState.QUEUED and status.attempt == envelope.attempt
