"""What only RabbitMQ's management API knows: in-flight counts and the list of queues.

Without it, ``queue_stats`` reports ``inflight`` as None (AMQP does not count
unacknowledged messages) and the front ends print "n/a (needs the management API)",
never 0; ``list_queues`` knows the queues this process used. With it (``management_url``
or ``STEM_RABBITMQ_MANAGEMENT_URL``), both come from ``GET /api/queues``, which the server
refreshes every few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest

from stem_core import Broker, Envelope, connect_broker
from tests.contract.helpers import receive_one, stats_of
from tests.specs import require_service
from tests.specs.rabbitmq import MANAGEMENT_URL, RABBITMQ_TEST_URL, delete_namespace
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
STEM = str(Path(sys.executable).parent / "stem")
# The server refreshes the API's figures every collect_statistics_interval (5 s by default).
REFRESH_DEADLINE_S = 30.0
COMMAND_TIMEOUT_S = 60


@pytest.fixture
async def plain(namespace: str) -> AsyncIterator[Broker]:
    """A broker without the management API (whatever the environment says)."""
    require_service("rabbitmq")
    opened = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None)
    yield opened
    await opened.close()
    await delete_namespace(RABBITMQ_TEST_URL, namespace)


async def test_without_the_api_in_flight_is_unknown_not_zero(plain: Broker) -> None:
    # Given one message held and one waiting
    await plain.publish(Envelope(name="t", queue="q"))
    held = await receive_one(plain, "q")
    assert held is not None
    await plain.publish(Envelope(name="t", queue="q"))
    # Then the counts AMQP gives are exact and the one it does not is None
    stats = await stats_of(plain, "q")
    assert (stats.pending, stats.delayed, stats.dead, stats.inflight, stats.oldest_pending_age) == (1, 0, 0, None, None)
    # And a queue never used is known to be empty, in flight included
    assert (await stats_of(plain, "never-used")).inflight == 0
    await plain.ack(held)


@pytest.mark.slow
def test_the_cli_says_what_it_cannot_know(namespace: str) -> None:
    require_service("rabbitmq")
    require_service("redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
    # The management API turned off (it is on by default: the plugin's standard listener)
    env.update({"STEM_BROKER_URL": RABBITMQ_TEST_URL, "STEM_RESULT_BACKEND_URL": "redis://127.0.0.1:6379/9",
                "STEM_NAMESPACE": namespace, "COLUMNS": "200", "STEM_RABBITMQ_MANAGEMENT_URL": ""})

    def stem(*args: str) -> str:
        result = subprocess.run([STEM, *args], capture_output=True, env=env, cwd=ROOT, timeout=COMMAND_TIMEOUT_S)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout.decode()

    try:
        stem("enqueue", "t", "-q", "emails")
        detail = stem("inspect", "queue", "emails", "--state", "dead")
        assert "1 pending, 0 delayed, n/a (needs the management API) in flight, 0 dead" in detail
        row = json.loads(stem("inspect", "queue", "emails", "--state", "dead", "--json"))["overview"]
        assert (row["pending"], row["inflight"]) == (1, None)
        # By default a fresh process lists the namespace's queues through the management
        # API's default address; in-flight stays unknown (its figures may be seconds old)
        del env["STEM_RABBITMQ_MANAGEMENT_URL"]
        listed = json.loads(stem("inspect", "queues", "--json", "--sample", "0"))["queues"]
        assert [(q["queue"], q["pending"], q["inflight"]) for q in listed] == [("emails", 1, None)]
    finally:
        import asyncio

        asyncio.run(delete_namespace(RABBITMQ_TEST_URL, namespace))


@pytest.fixture
async def managed(namespace: str) -> AsyncIterator[Broker]:
    require_service("rabbitmq")
    require_service("rabbitmq-management")
    opened = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=MANAGEMENT_URL)
    yield opened
    await opened.close()
    await delete_namespace(RABBITMQ_TEST_URL, namespace)


async def test_with_the_api_in_flight_is_counted(managed: Broker) -> None:
    # Given two messages held by a consumer and one waiting
    await managed.publish_many([Envelope(name="t", queue="m") for _ in range(3)])
    first = await receive_one(managed, "m")
    second = await receive_one(managed, "m")
    assert first is not None and second is not None

    async def two_in_flight() -> object:
        stats = await stats_of(managed, "m")
        return stats if stats.inflight == 2 else None

    # Then the API reports them once the server refreshed its figures
    stats = await eventually(two_in_flight, timeout=REFRESH_DEADLINE_S, message="the API to count two in flight")
    assert stats.pending == 1
    for delivery in (first, second):
        await managed.ack(delivery)


async def test_with_the_api_every_queue_of_the_namespace_is_listed(managed: Broker, namespace: str) -> None:
    # Given a queue another process (another broker object) used
    other = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url=None)
    try:
        await other.publish(Envelope(name="t", queue="elsewhere"))
    finally:
        await other.close()

    async def listed() -> bool:
        return "elsewhere" in await managed.list_queues()

    # Then the API lists it, which plain AMQP cannot
    await eventually(listed, timeout=REFRESH_DEADLINE_S, message="the API to list the other process's queue")


async def test_an_api_that_does_not_answer_leaves_the_counts_unknown(namespace: str) -> None:
    require_service("rabbitmq")
    broker = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, management_url="http://127.0.0.1:1")
    try:
        await broker.publish(Envelope(name="t", queue="q"))
        stats = await stats_of(broker, "q")
        assert (stats.pending, stats.inflight) == (1, None)
    finally:
        await broker.close()
        await delete_namespace(RABBITMQ_TEST_URL, namespace)
