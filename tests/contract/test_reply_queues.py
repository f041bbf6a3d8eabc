"""Control reply queues (``stem.reply.<id>``) are one-shot plumbing: once their client
purges them, nothing of them stays on the server (issue 15: every ``stem broadcast`` left
Redis stream keys without expiry and a registry member, SQLite/PostgreSQL a counters row,
RabbitMQ an empty queue for minutes, which every overview then scanned)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest

from stem_core import Broker
from stem_core.control.protocol import new_request_id, reply_queue_name
from tests.specs import AdapterSpec

from .helpers import env, receive_one


async def _redis_leftovers(broker: Any, url: str, namespace: str, queue: str) -> list[str]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{namespace}:*")]
        members = [m.decode() for m in await client.smembers(f"{namespace}:queues")]
    finally:
        await client.aclose()
    return [k for k in keys if queue in k] + [m for m in members if m == queue]


async def _sqlite_leftovers(broker: Any, url: str, namespace: str, queue: str) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(url[len("sqlite://"):])
    try:
        rows = conn.execute("SELECT queue FROM queue_counts WHERE ns = ? AND queue = ? UNION ALL "
                            "SELECT queue FROM jobs WHERE ns = ? AND queue = ?", (namespace, queue, namespace, queue))
        return [r[0] for r in rows]
    finally:
        conn.close()


async def _postgres_leftovers(broker: Any, url: str, namespace: str, queue: str) -> list[str]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(f"SELECT queue FROM {broker.schema}.queue_counts WHERE queue = %s UNION ALL "
                                 f"SELECT queue FROM {broker.schema}.jobs WHERE queue = %s", (queue, queue))
        return [r[0] for r in await cur.fetchall()]


async def _rabbitmq_leftovers(broker: Any, url: str, namespace: str, queue: str) -> list[str]:
    name = broker._inspector._names.work(queue)  # test-only look at the server object
    return [name] if await broker._conn.passive(name) is not None else []


LEFTOVERS: dict[str, Callable[[Any, str, str, str], Awaitable[list[str]]]] = {
    "redis": _redis_leftovers, "sqlite": _sqlite_leftovers, "postgres": _postgres_leftovers,
    "rabbitmq": _rabbitmq_leftovers,
}


async def test_a_purged_reply_queue_leaves_nothing_behind(broker: Broker, broker_spec: AdapterSpec, broker_url: str,
                                                         namespace: str) -> None:
    # Given a reply queue a worker answered on twice, and its client read one reply
    queue = reply_queue_name(new_request_id())
    for _ in range(2):
        await broker.publish(env(queue=queue, name="stem.control.reply"))
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    await broker.ack(delivery)
    # When the client purges it (ControlClient does, once it stops waiting)
    await broker.purge(queue)
    # Then nothing of it is listed, counted or stored any more
    assert queue not in await broker.list_queues()
    (stats,) = await broker.queue_stats([queue])
    assert (stats.pending, stats.delayed, stats.inflight, stats.dead) == (0, 0, 0, 0)
    probe = LEFTOVERS.get(broker_spec.id)
    if probe is not None:
        assert await probe(broker, broker_url, namespace, queue) == []


async def _age_rows(broker: Any, broker_spec: AdapterSpec, url: str, namespace: str, queue: str, seconds: float) -> None:
    """Make ``queue``'s rows ``seconds`` older (test-only write to the broker's tables)."""
    if broker_spec.id == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite://"):])
        try:
            with conn:
                conn.execute("UPDATE jobs SET enqueued_at = enqueued_at - ? WHERE ns = ? AND queue = ?",
                             (seconds, namespace, queue))
        finally:
            conn.close()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute(f"UPDATE {broker.schema}.jobs SET created_at = created_at - make_interval(secs => %s) "
                               "WHERE queue = %s", (seconds, queue))


async def test_a_late_reply_to_a_purged_reply_queue_is_deleted_after_the_ttl(
        broker: Broker, broker_spec: AdapterSpec, broker_url: str, namespace: str) -> None:
    from stem_core.settings import REPLY_QUEUE_TTL_SECONDS

    if broker_spec.id not in ("sqlite", "postgres"):
        pytest.skip("Redis and RabbitMQ expire reply queues themselves; memory and SQS keep nothing for long")
    # Given two reply queues whose replies arrived after their clients purged them (issue 15:
    # on SQLite/PostgreSQL such a row stayed for good), one of them longer ago than the TTL
    stale, recent = reply_queue_name(new_request_id()), reply_queue_name(new_request_id())
    for queue in (stale, recent):
        await broker.purge(queue)
        await broker.publish(env(queue=queue, name="stem.control.reply"))
    await _age_rows(broker, broker_spec, broker_url, namespace, stale, REPLY_QUEUE_TTL_SECONDS + 60)
    # When a later command's client purges its own reply queue
    await broker.purge(reply_queue_name(new_request_id()))
    # Then the stale reply is gone with its counters, the recent one is kept
    probe = LEFTOVERS[broker_spec.id]
    assert await probe(broker, broker_url, namespace, stale) == []
    assert await probe(broker, broker_url, namespace, recent) == [recent, recent]
    assert stale not in await broker.list_queues()
