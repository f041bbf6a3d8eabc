"""PostgreSQL broker: the semantics the contract suite checks for every adapter, plus what
only this adapter has (transactional enqueue, fencing by lease number, undecodable rows,
counters kept by triggers, LISTEN wake-ups, URL handling). Real server, one schema per test.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from stem_core import Envelope
from stem_core.adapters.postgres import PostgresBroker
from stem_core.adapters.postgres.connection import quote_ident, schema_name
from stem_core.envelope import Delivery
from stem_core.errors import BrokerUnavailable, ConfigurationError, LeaseLost
from tests.specs import AdapterSpec, require_service
from tests.specs.postgres import SPEC, URL
from tests.support import eventually

BrokerFactory = Callable[..., Awaitable[PostgresBroker]]
# Generous upper bounds for waiting on an event; tests never assert on timings.
DEADLINE_S = 10.0


@pytest.fixture
def broker_spec() -> AdapterSpec:
    """PostgreSQL only: ``broker_factory`` (tests/conftest.py) opens brokers on the test's
    namespace, closes them and removes the namespace afterwards."""
    require_service("postgres")
    return SPEC


async def next_delivery(it: AsyncIterator[Delivery], timeout: float = DEADLINE_S) -> Delivery:
    return await asyncio.wait_for(it.__anext__(), timeout)


async def sql(namespace: str, query: str, *params: object) -> list[tuple]:
    """Run ``query`` with ``{s}`` replaced by the test's schema (for white-box checks)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(query.replace("{s}", quote_ident(schema_name(namespace))), params or None)
        return await cur.fetchall() if cur.description else []


async def test_delivers_by_priority_then_age_across_queues(broker_factory: BrokerFactory) -> None:
    # Given messages on two queues with mixed priorities
    broker = await broker_factory()
    await broker.publish(Envelope(name="old-low", queue="a"))
    await broker.publish(Envelope(name="high", queue="b", priority=7))
    await broker.publish(Envelope(name="new-low", queue="b"))
    await broker.publish(Envelope(name="mid", queue="a", priority=3))
    # When one subscription spanning both queues takes them all
    it = broker.consume(["a", "b"], prefetch=10)
    names = [(await next_delivery(it)).envelope.name for _ in range(4)]
    await it.aclose()
    # Then higher priority wins, then the oldest
    assert names == ["high", "mid", "old-low", "new-low"]


async def test_prefetch_caps_unsettled_deliveries(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish_many([Envelope(name=f"t{i}") for i in range(5)])
    it = broker.consume("default", prefetch=2)
    first = [await next_delivery(it) for _ in range(2)]
    # While two are held, a third does not come
    pending = asyncio.ensure_future(next_delivery(it))
    done, _ = await asyncio.wait({pending}, timeout=0.5)
    assert not done
    await broker.ack(first[0])
    third = await pending
    assert third.envelope.name not in {d.envelope.name for d in first}
    stats = (await broker.queue_stats(["default"]))[0]
    assert (stats.pending, stats.inflight) == (2, 2)
    await it.aclose()


async def test_expired_lease_is_redelivered_and_fences_the_old_receipt(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="slow", visibility_timeout=0.5))
    first_it = broker.consume("default", consumer="first")
    first = await next_delivery(first_it)
    # When the lease runs out, another consumer gets the message with delivery_count + 1
    second_it = broker.consume("default", consumer="second")
    second = await next_delivery(second_it)  # within DEADLINE_S (a liveness bound, not a timing)
    assert second.envelope.id == first.envelope.id
    assert second.delivery_count == first.delivery_count + 1
    # The old holder can no longer settle or extend it
    with pytest.raises(LeaseLost):
        await broker.extend_lease(first, 5)
    await broker.ack(first)
    assert (await broker.queue_stats(["default"]))[0].inflight == 1
    await broker.ack(second)
    stats = (await broker.queue_stats(["default"]))[0]
    assert (stats.pending, stats.inflight, stats.completed_total) == (0, 0, 1)
    await first_it.aclose()
    await second_it.aclose()


async def test_expired_but_unclaimed_lease_still_settles(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="x", visibility_timeout=0.2))
    it = broker.consume("default")
    held = await next_delivery(it)
    await it.aclose()
    await asyncio.sleep(0.4)
    assert (await broker.queue_stats(["default"]))[0].pending == 1  # reaped, not re-claimed
    new_deadline = await broker.extend_lease(held, 30)
    assert new_deadline > held.lease_expires_at
    assert (await broker.queue_stats(["default"]))[0].inflight == 1
    await broker.ack(held)
    assert (await broker.queue_stats(["default"]))[0].inflight == 0


async def test_extend_lease_keeps_the_message_from_others(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="long", visibility_timeout=0.5))
    it = broker.consume("default")
    held = await next_delivery(it)
    await broker.extend_lease(held, 30)
    other = broker.consume("default")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(other.__anext__(), 1.5)
    await broker.ack(held)
    assert (await broker.queue_stats(["default"]))[0].inflight == 0


async def test_nack_requeues_with_attempt_and_delay(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="retry"))
    it = broker.consume("default")
    first = await next_delivery(it)
    await broker.nack(first, delay=0.3)
    stats = (await broker.queue_stats(["default"]))[0]
    assert (stats.pending, stats.delayed, stats.inflight) == (0, 1, 0)
    again = await next_delivery(it)
    assert again.envelope.attempt == 1 and again.envelope.id == first.envelope.id
    assert again.envelope.not_before is not None
    await broker.nack(again, requeue=False)
    stats = (await broker.queue_stats(["default"]))[0]
    assert (stats.pending, stats.delayed, stats.inflight, stats.dead) == (0, 0, 0, 0)
    await it.aclose()


async def test_delayed_publish_is_invisible_until_due(broker_factory: BrokerFactory) -> None:
    from datetime import timedelta

    from stem_core.clock import utcnow

    broker = await broker_factory()
    due = utcnow() + timedelta(seconds=0.5)
    await broker.publish(Envelope(name="later", not_before=due))
    assert (await broker.queue_stats(["default"]))[0].delayed == 1
    it = broker.consume("default")
    got = await next_delivery(it)
    assert utcnow() >= due
    assert got.envelope.name == "later"
    await it.aclose()


async def test_dead_letters_list_replay_and_purge(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish_many([Envelope(name=f"bad{i}", queue="q") for i in range(3)])
    it = broker.consume("q", prefetch=3)
    held = [await next_delivery(it) for _ in range(3)]
    for d in held:
        await broker.dead_letter(d, reason="boom", meta={"why": d.envelope.name})
    page = await broker.list_dead_letters("q", limit=2)
    assert [e.envelope.name for e in page.entries] == ["bad2", "bad1"] and page.next_offset == 2
    assert (await broker.get_dead_letter("q", held[0].envelope.id)).meta == {"why": "bad0"}
    dry = await broker.replay_dead_letters("q", limit=1, dry_run=True)
    assert dry.count == 1 and (await broker.queue_stats(["q"]))[0].dead == 3
    replayed = await broker.replay_dead_letters("q", limit=1)
    assert [e.envelope.name for e in replayed.entries] == ["bad0"]
    back = await next_delivery(it)
    assert back.envelope.id == held[0].envelope.id and back.envelope.meta["stem.replayCount"] == 1
    assert await broker.purge_dead_letters("q") == 2
    assert (await broker.queue_stats(["q"]))[0].dead == 0
    await it.aclose()


async def test_requeue_fences_the_old_holder(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="stuck"))
    it = broker.consume("default", prefetch=2)
    old = await next_delivery(it)
    assert await broker.requeue("default", [old.envelope.id]) == 1
    new = await next_delivery(it)
    await broker.ack(old)  # stale: must not delete the new copy's delivery
    assert (await broker.queue_stats(["default"]))[0].inflight == 1
    await broker.ack(new)
    assert (await broker.queue_stats(["default"]))[0].inflight == 0
    await it.aclose()


async def test_broadcast_reaches_every_subscriber_across_brokers(broker_factory: BrokerFactory, namespace: str) -> None:
    a, b = await broker_factory(), await broker_factory()
    it_a = a.consume([], channels=["ctl"])
    it_b = b.consume([], channels=["ctl"])
    # Subscriptions register on first iteration: start both, then broadcast
    wait_a = asyncio.ensure_future(next_delivery(it_a))
    wait_b = asyncio.ensure_future(next_delivery(it_b))
    await eventually(lambda: _subscriber_count(namespace), equals=2, timeout=DEADLINE_S)
    await a.broadcast("ctl", Envelope(name="ping"))
    got_a, got_b = await wait_a, await wait_b
    assert got_a.envelope.name == got_b.envelope.name == "ping"
    assert got_a.channel == "ctl" and got_a.envelope.id == got_b.envelope.id
    await a.ack(got_a)
    await it_a.aclose()
    await it_b.aclose()
    # Everything read by every subscriber is cleaned up at the next broadcast
    await a.broadcast("ctl", Envelope(name="nobody"))
    assert await sql(namespace, "SELECT count(*) FROM {s}.broadcasts") == [(0,)]


async def _subscriber_count(namespace: str) -> int:
    return (await sql(namespace, "SELECT count(*) FROM {s}.subscribers"))[0][0]


async def test_transactional_publish_follows_the_callers_transaction(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        async with conn.transaction(force_rollback=True):
            await broker.publish(Envelope(name="rolled-back"), connection=conn)
        async with conn.transaction():
            await broker.publish_many([Envelope(name="kept1"), Envelope(name="kept2")], connection=conn)
            # Not visible to others before the commit
            assert (await broker.queue_stats(["default"]))[0].pending == 0
    stats = (await broker.queue_stats(["default"]))[0]
    assert (stats.pending, stats.enqueued_total) == (2, 2)
    with pytest.raises(ValueError):
        await broker.publish(Envelope(name="x"), connection="not a connection")  # type: ignore[arg-type]


async def test_undecodable_row_is_dead_lettered_and_does_not_block(broker_factory: BrokerFactory, namespace: str) -> None:
    broker = await broker_factory()
    await sql(namespace, "INSERT INTO {s}.jobs (msg_id, queue, name, state, envelope) "
                         "VALUES ('junk', 'default', 'junk', 'ready', '{\"args\": 5}'::jsonb)")
    await broker.publish(Envelope(name="good"))
    it = broker.consume("default")
    got = await next_delivery(it)
    assert got.envelope.name == "good"
    await broker.ack(got)
    page = await broker.list_dead_letters("default")
    assert len(page.entries) == 1
    entry = page.entries[0]
    assert entry.reason == "invalid-envelope" and entry.envelope.name == "<invalid>"
    assert "raw" in entry.envelope.meta and "error" in entry.envelope.meta
    await it.aclose()


async def test_counters_match_the_rows(broker_factory: BrokerFactory, namespace: str) -> None:
    broker = await broker_factory()
    await broker.publish_many([Envelope(name=f"n{i}", queue=f"q{i % 3}", priority=i % 10) for i in range(60)])
    it = broker.consume(["q0", "q1", "q2"], prefetch=20)
    held = [await next_delivery(it) for _ in range(20)]
    for i, d in enumerate(held):
        if i % 4 == 0:
            await broker.ack(d)
        elif i % 4 == 1:
            await broker.nack(d, delay=60)
        elif i % 4 == 2:
            await broker.dead_letter(d, reason="r")
    await it.aclose()
    await broker.remove("q1", [held[3].envelope.id])
    await broker.purge("q2")
    rows = await sql(namespace, "SELECT queue, state, count(*) FROM {s}.jobs GROUP BY 1, 2")
    actual = {(q, s): n for q, s, n in rows}
    dead = dict(await sql(namespace, "SELECT queue, count(*) FROM {s}.dead_letters GROUP BY 1"))
    for stats in await broker.queue_stats(["q0", "q1", "q2"]):
        q = stats.queue
        assert stats.pending == actual.get((q, "ready"), 0)
        assert stats.delayed == actual.get((q, "delayed"), 0)
        assert stats.inflight == actual.get((q, "leased"), 0)
        assert stats.dead == dead.get(q, 0)
    assert sum(s.enqueued_total for s in await broker.queue_stats(["q0", "q1", "q2"])) == 60
    assert sum(s.completed_total for s in await broker.queue_stats(["q0", "q1", "q2"])) == 5


async def test_idle_consumer_wakes_on_notify(broker_factory: BrokerFactory) -> None:
    # Given a consumer already waiting on an empty queue
    consumer, producer = await broker_factory(), await broker_factory()
    it = consumer.consume("default")
    waiting = asyncio.ensure_future(next_delivery(it))
    await asyncio.sleep(0.2)
    # When another broker (another connection, as another process would) publishes
    await producer.publish(Envelope(name="wake"))
    # Then the waiting consumer gets it
    assert (await waiting).envelope.name == "wake"
    await it.aclose()


async def test_no_session_is_left_idle_in_transaction(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish_many([Envelope(name=f"n{i}") for i in range(10)])
    it = broker.consume("default", prefetch=5)
    for _ in range(10):
        await broker.ack(await next_delivery(it))
    await broker.replay_dead_letters("default")
    await it.aclose()
    rows = await sql("x", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stem' "
                          "AND state LIKE 'idle in transaction%%'")
    assert rows == [(0,)]


async def test_url_options_and_password_redaction(namespace: str) -> None:
    require_service("postgres")
    with pytest.raises(ConfigurationError, match="bogus"):
        PostgresBroker.from_url(URL + "?bogus=1", namespace=namespace)
    with pytest.raises(ConfigurationError, match="unknown PostgreSQL option"):
        PostgresBroker.from_url(URL, namespace=namespace, nope=1)
    broker = PostgresBroker.from_url(URL + "?sslmode=disable&lease_seconds=7", namespace=namespace)
    assert broker.lease_seconds == 7.0 and "sslmode=disable" in broker._config.conninfo
    secret = "s3cr3t-" + uuid.uuid4().hex[:6]
    down = PostgresBroker.from_url(f"postgresql://bob:{secret}@127.0.0.1:1/test?connect_timeout=1", namespace=namespace)
    with pytest.raises(BrokerUnavailable) as caught:
        await down.connect()
    assert secret not in str(caught.value) and "***" in str(caught.value)
    assert secret not in repr(down)


async def test_invalid_names_never_reach_sql(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    with pytest.raises(ValueError):
        await broker.publish(Envelope(name="x"), queue="bad'; DROP TABLE x; --")
    with pytest.raises(ValueError):
        await broker.queue_stats(["no spaces"])


async def test_dead_letter_meta_must_be_json(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory()
    await broker.publish(Envelope(name="x"))
    it = broker.consume("default")
    d = await next_delivery(it)
    with pytest.raises(ValueError):
        await broker.dead_letter(d, reason="r", meta={"bad": object()})
    await it.aclose()
    assert json.loads(d.envelope.to_json())["name"] == "x"


@pytest.mark.parametrize("name", ["peek_ready_after", "peek_delayed_after", "peek_leased_after"])
async def test_peek_pages_after_a_cursor_by_one_index_seek(broker_factory: BrokerFactory, namespace: str, name: str) -> None:
    # Given 20,000 rows per state over five queues, all sharing one time (the ties a seek
    # on the time alone would walk), as the planner sees them after ANALYZE
    broker = await broker_factory()
    for state in ("ready", "delayed", "leased"):
        await sql(namespace, "INSERT INTO {s}.jobs (msg_id, queue, name, priority, state, ready_at, locked_until, envelope) "
                  "SELECT 'm' || g, 'q' || (g %% 5), 't', g %% 3, %s, '2030-01-01Z', '2030-01-01Z', '{}'::jsonb "
                  "FROM generate_series(1, 20000) g", state)
    await sql(namespace, "ANALYZE {s}.jobs")
    # When the page after a deep cursor is planned and run
    query = getattr(broker._inspector._q, name)
    assert "OFFSET" not in query.upper()
    stored = {"peek_ready_after": "ready", "peek_delayed_after": "delayed", "peek_leased_after": "leased"}[name]
    [(deep_id,)] = await sql(namespace, "SELECT max(id) - 500 FROM {s}.jobs WHERE state = %s", stored)
    params = {"queue": "q1", "limit": 11, "priority": 1, "at": datetime(2030, 1, 1, tzinfo=timezone.utc), "id": deep_id}
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + query, params)
        plan = "\n".join(r[0] for r in await cur.fetchall())
    # Then every read is an index scan that starts past the cursor's key: nothing walked and dropped
    assert "Seq Scan" not in plan and "Rows Removed by Filter" not in plan, plan
    assert "Index Cond" in plan and "> ROW(" in plan, plan


async def test_janitor_vacuums_a_table_full_of_dead_rows(broker_factory: BrokerFactory, namespace: str) -> None:
    from stem_core.adapters.postgres.janitor import VACUUM_MIN_DEAD_ROWS, vacuum_if_needed

    broker = await broker_factory()
    await broker.publish_many([Envelope(name=f"n{i}") for i in range(VACUUM_MIN_DEAD_ROWS + 500)])
    # Deleted on our own session, which is asked to publish its statistics right away
    await sql(namespace, "SELECT pg_stat_force_next_flush(); DELETE FROM {s}.jobs")

    async def dead() -> int:
        rows = await sql(namespace, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'jobs'",
                         schema_name(namespace))
        return rows[0][0] if rows else 0

    async def enough_dead() -> bool:
        return await dead() >= VACUUM_MIN_DEAD_ROWS

    await eventually(enough_dead, timeout=DEADLINE_S, interval=0.1)  # statistics reach the server asynchronously
    assert await vacuum_if_needed(broker._connection.durable(), schema_name(namespace), ("jobs", "queue_counts")) == ["jobs"]

    async def vacuumed() -> bool:
        return await dead() < VACUUM_MIN_DEAD_ROWS

    # The vacuum's own statistics reach the server asynchronously too (seen on a loaded host).
    await eventually(vacuumed, timeout=DEADLINE_S, interval=0.1)


async def test_settle_pool_grows_with_the_prefetch(broker_factory: BrokerFactory) -> None:
    broker = await broker_factory(pool_size=2)
    await broker.publish(Envelope(name="x"))
    it = broker.consume("default", prefetch=12)
    await broker.ack(await next_delivery(it))
    settle = await broker._connection.fast()
    assert settle.pool.max_size >= 13  # room for every unsettled delivery to settle at once
    await it.aclose()
