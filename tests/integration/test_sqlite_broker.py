"""SQLite broker specifics the contract suite cannot see: namespaces sharing one file,
trigger-kept counters that always equal the real row counts, queue statistics served by
indexes only, a cancelled claim handing its rows back, and the broadcast sweep."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stem_core import Broker, Envelope
from stem_core.adapters.sqlite import broadcasts, jobs
from stem_core.adapters.sqlite.schema import Q
from stem_core.clock import utcnow
from tests.support import eventually

from .sqlite_helpers import DEADLINE_S, SQLiteOpener, rows, take


async def test_two_namespaces_share_a_file_without_seeing_each_other(open_sqlite: SQLiteOpener) -> None:
    # Given two namespaces on one file, each with a message, a dead letter, a status and a subscriber
    a = await open_sqlite.broker(namespace="alpha")
    b = await open_sqlite.broker(namespace="beta")
    await a.publish(Envelope(name="a.task", queue="shared"))
    await b.publish(Envelope(name="b.task", queue="shared"))
    [dead] = await take(b, ["shared"], 1)
    await b.dead_letter(dead, reason="test")
    backend_a = await open_sqlite.backend(namespace="alpha")
    backend_b = await open_sqlite.backend(namespace="beta")
    await backend_a.set_status("t", "queued")
    # Then each namespace sees only its own rows
    [stats_a] = await a.queue_stats(["shared"])
    [stats_b] = await b.queue_stats(["shared"])
    assert (stats_a.pending, stats_a.dead) == (1, 0)
    assert (stats_b.pending, stats_b.dead) == (0, 1)
    assert (await a.list_dead_letters("shared")).entries == []
    assert [d.envelope.name for d in await take(a, ["shared"], 1)] == ["a.task"]
    assert await backend_b.get_status("t") is None
    assert (await backend_a.get_status("t")) is not None


async def pending(broker: Broker, queue: str) -> int:
    return (await broker.queue_stats([queue]))[0].pending


def subscribers(path: Path, namespace: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM subscribers WHERE ns = ?", (namespace,)).fetchone()[0]
    finally:
        conn.close()


def real_counts(path: Path, namespace: str, queue: str) -> tuple[int, int, int, int]:
    counts = {state: 0 for state in ("ready", "delayed", "leased")}
    where = "WHERE ns = ? AND queue = ?"
    for state, n in rows(path, f"SELECT state, count(*) FROM jobs {where} GROUP BY state", namespace, queue):
        counts[state] = n
    [(dead,)] = rows(path, f"SELECT count(*) FROM dead_letters {where}", namespace, queue)
    [kept] = rows(path, f"SELECT ready, delayed, leased, dead FROM queue_counts {where}", namespace, queue)
    assert kept == (counts["ready"], counts["delayed"], counts["leased"], dead), "counters drifted from the rows"
    return counts["ready"], counts["delayed"], counts["leased"], dead


async def test_counters_always_equal_the_rows(sqlite_broker: Broker, db_path: Path, namespace: str) -> None:
    # Given a seeded random mix of every operation that changes a message's state
    rng = random.Random(20261129)
    queue = "mix"
    for step in range(60):
        action = rng.choice(["publish", "delay", "claim", "ack", "nack", "drop", "dead", "requeue", "remove", "purge", "replay"])
        if action == "publish":
            batch = [Envelope(name="t", queue=queue, priority=rng.randint(0, 9)) for _ in range(rng.randint(1, 5))]
            await sqlite_broker.publish_many(batch)
        elif action == "delay":
            await sqlite_broker.publish(Envelope(name="t", queue=queue, not_before=utcnow() + timedelta(seconds=60)))
        elif action in ("claim", "ack", "nack", "drop", "dead"):
            [stats] = await sqlite_broker.queue_stats([queue])
            if stats.pending == 0:
                continue
            [delivery] = await take(sqlite_broker, [queue], 1)
            if action == "ack":
                await sqlite_broker.ack(delivery)
            elif action == "nack":
                await sqlite_broker.nack(delivery, delay=rng.choice([None, 30.0]))
            elif action == "drop":
                await sqlite_broker.nack(delivery, requeue=False)
            elif action == "dead":
                await sqlite_broker.dead_letter(delivery, reason="mix")
        elif action in ("requeue", "remove"):
            infos = await sqlite_broker.peek(queue, state=rng.choice(["pending", "delayed", "inflight"]))
            ids = [info.envelope.id for info in infos[: rng.randint(0, 3)]]
            await (sqlite_broker.requeue(queue, ids) if action == "requeue" else sqlite_broker.remove(queue, ids))
        elif action == "purge" and rng.random() < 0.2:
            await sqlite_broker.purge(queue)
        elif action == "replay":
            await sqlite_broker.replay_dead_letters(queue, limit=rng.randint(1, 3))
        # Then after every step the trigger-kept counters equal a real count of the rows
        ready, delayed, leased, dead = real_counts(db_path, namespace, queue)
        [stats] = await sqlite_broker.queue_stats([queue])
        assert (stats.pending, stats.delayed, stats.inflight, stats.dead) == (ready, delayed, leased, dead), action


async def test_stats_count_overdue_rows_before_any_consumer_moves_them(
    sqlite_broker: Broker, db_path: Path, namespace: str
) -> None:
    # Given a leased message whose lease has expired and a delayed one now due, untouched since
    await sqlite_broker.publish(Envelope(name="t", queue="q", visibility_timeout=0.05))
    [delivery] = await take(sqlite_broker, ["q"], 1)
    await sqlite_broker.publish(Envelope(name="t", queue="q", not_before=utcnow() + timedelta(seconds=0.05)))
    await asyncio.sleep(0.2)
    # Then the stored states are still 'leased' and 'delayed' ...
    assert real_counts(db_path, namespace, "q") == (0, 1, 1, 0)
    # ... but queue_stats reports both as pending, with an age
    [stats] = await sqlite_broker.queue_stats(["q"])
    assert (stats.pending, stats.delayed, stats.inflight) == (2, 0, 0)
    assert stats.oldest_pending_age is not None and stats.oldest_pending_age > 0
    # And the old receipt still settles the expired (not yet redelivered) message
    await sqlite_broker.ack(delivery)
    assert (await sqlite_broker.queue_stats(["q"]))[0].pending == 1


@pytest.mark.parametrize("name", ["queue_counts", "oldest_pending", "ready_head", "next_delayed", "next_expiry", "promote_due",
                                  "reap_expired", "peek_pending", "peek_delayed", "peek_inflight"])
async def test_statistics_and_claims_are_served_by_indexes(open_sqlite: SQLiteOpener, db_path: Path, name: str) -> None:
    # Given the migrated schema
    await open_sqlite.broker()
    conn = sqlite3.connect(db_path)
    params = {"ns": "n", "queue": "q", "queues": '["q"]', "now": 0.0, "limit": 10, "offset": 0}
    # Then no step of the plan scans the jobs table
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {getattr(Q, name)}", params)]
    assert not [step for step in plan if step.startswith("SCAN jobs")], plan


@pytest.mark.parametrize("name", ["peek_pending_after", "peek_delayed_after", "peek_inflight_after"])
async def test_peek_pages_after_a_cursor_by_index_seeks(open_sqlite: SQLiteOpener, db_path: Path, name: str) -> None:
    # Given the migrated schema
    await open_sqlite.broker()
    conn = sqlite3.connect(db_path)
    params = {"ns": "n", "queue": "q", "priority": 3, "at": 1.0, "id": 5, "limit": 10, "now": 2.0}
    # Then a page after a cursor has no OFFSET and every part of it seeks an index
    query = getattr(Q, name)
    assert "OFFSET" not in query.upper()
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", params)]
    reads = [step for step in plan if " jobs" in step]
    assert reads and all(step.startswith("SEARCH jobs USING INDEX") for step in reads), plan


def _vm_steps(conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> tuple[int, int]:
    """``(virtual machine steps / 10, rows)`` of one query: a count, not a timing."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 10)
    try:
        found = conn.execute(query, params).fetchall()
    finally:
        conn.set_progress_handler(None, 10)
    return steps[0], len(found)


@pytest.mark.parametrize("state", ["pending", "delayed"])
async def test_a_deep_peek_page_costs_what_a_shallow_one_costs(
    sqlite_broker: Broker, db_path: Path, namespace: str, state: str
) -> None:
    # Given 3,000 messages sharing one ready time (the ties a seek on the time alone,
    # as a row-value comparison does, would walk)
    now = utcnow()
    not_before = now + timedelta(hours=1) if state == "delayed" else None
    await sqlite_broker.publish_many([Envelope(name="t", queue="q", enqueued_at=now, not_before=not_before) for _ in range(3000)])
    stored = "ready" if state == "pending" else "delayed"
    conn = sqlite3.connect(db_path)
    keys = conn.execute(
        "SELECT priority, ready_at, id FROM jobs WHERE ns = ? AND queue = 'q' AND state = ? ORDER BY priority DESC, ready_at, id",
        (namespace, stored),
    ).fetchall()
    assert len(keys) == 3000
    assert len({at for _, at, _ in keys}) == 1
    first_q, after_q = (Q.peek_pending, Q.peek_pending_after) if state == "pending" else (Q.peek_delayed, Q.peek_delayed_after)
    page = {"ns": namespace, "queue": "q", "limit": 11, "now": now.timestamp()}

    def after(position: int) -> dict[str, Any]:
        priority, at, row_id = keys[position]
        return {**page, "priority": priority, "at": at, "id": row_id}

    # When the pages after the 11th and the 2,901st message, and the page at offset 2,901, are read
    shallow_cost, shallow_rows = _vm_steps(conn, after_q, after(10))
    deep_cost, deep_rows = _vm_steps(conn, after_q, after(2900))
    offset_cost, _ = _vm_steps(conn, first_q, {**page, "offset": 2901})
    # Then the deep page costs what the shallow one costs, far less than the offset
    assert (shallow_rows, deep_rows) == (11, 11)
    assert deep_cost <= shallow_cost + 5, (shallow_cost, deep_cost)
    assert offset_cost > 10 * deep_cost, (offset_cost, deep_cost)


async def test_a_cancelled_claim_hands_its_rows_back(
    sqlite_broker: Broker, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claim that commits only after its caller was cancelled
    entered = threading.Event()
    real_step = jobs.receive_step

    def slow_step(conn: Any, request: jobs.StepRequest) -> jobs.StepResult:
        if request.limit > 0:
            entered.set()
            release.wait(DEADLINE_S)
        return real_step(conn, request)

    release = threading.Event()
    monkeypatch.setattr(jobs, "receive_step", slow_step)
    await sqlite_broker.publish(Envelope(name="t", queue="q"))
    deliveries = sqlite_broker.consume(["q"])
    receiver = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    assert await asyncio.to_thread(entered.wait, DEADLINE_S)
    # When the consumer is cancelled mid-claim
    receiver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiver
    monkeypatch.setattr(jobs, "receive_step", real_step)
    release.set()
    # Then the claimed row goes back to pending, as if never delivered
    await eventually(lambda: pending(sqlite_broker, "q"), equals=1, timeout=DEADLINE_S)
    [again] = await take(sqlite_broker, ["q"], 1)
    assert again.delivery_count == 1


async def test_rows_claimed_but_not_handed_out_go_back_uncounted(sqlite_broker: Broker) -> None:
    # Given a prefetch-3 batch of which the consumer took only the first
    await sqlite_broker.publish_many([Envelope(name="t", queue="q", visibility_timeout=60) for _ in range(3)])
    deliveries = sqlite_broker.consume(["q"], prefetch=3)
    await asyncio.wait_for(anext(deliveries), DEADLINE_S)  # type: ignore[arg-type]
    # When it stops, then the other two rows are back at once, their claim not counted
    await deliveries.aclose()  # type: ignore[attr-defined]
    assert [(s.pending, s.inflight) for s in await sqlite_broker.queue_stats(["q"])] == [(2, 1)]
    assert [d.delivery_count for d in await take(sqlite_broker, ["q"], 2)] == [1, 1]


async def test_broadcast_rows_and_dead_subscribers_are_swept(sqlite_broker: Broker, db_path: Path, namespace: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a subscriber (of another process) that read nothing, and a broadcast it holds back
    monkeypatch.setattr(broadcasts, "SUBSCRIBER_TOUCH_S", 0.05)
    monkeypatch.setattr(broadcasts, "SWEEP_INTERVAL_S", 0.0)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute(
        "INSERT INTO subscribers (ns, subscription, channel, consumer, cursor, seen_at) "
        "VALUES (?, 'gone', 'ch', 'dead', 0, (julianday('now') - 2440587.5) * 86400.0)",
        (namespace,),
    )
    await sqlite_broker.broadcast("ch", Envelope(name="one"))
    assert conn.execute("SELECT count(*) FROM broadcasts WHERE ns = ?", (namespace,)).fetchone()[0] == 1
    # When that subscriber goes stale (its process died) and a live subscription reads a newer broadcast
    monkeypatch.setattr(broadcasts, "SUBSCRIBER_STALE_S", 0.2)
    await asyncio.sleep(0.3)
    deliveries = sqlite_broker.consume(["idle"], channels=["ch"])
    receiver = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    await eventually(lambda: conn.execute("SELECT count(*) FROM subscribers WHERE ns = ? AND subscription != 'gone'",
                                          (namespace,)).fetchone()[0], equals=1, timeout=DEADLINE_S)
    await sqlite_broker.broadcast("ch", Envelope(name="two"))
    delivery = await asyncio.wait_for(receiver, DEADLINE_S)
    assert delivery.envelope.name == "two"
    # Then, while the subscription keeps polling, its sweep drops the dead subscriber and
    # every row the live one has read
    polling = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    await eventually(lambda: (conn.execute("SELECT count(*) FROM broadcasts WHERE ns = ?", (namespace,)).fetchone()[0],
                              conn.execute("SELECT count(*) FROM subscribers WHERE ns = ?", (namespace,)).fetchone()[0]),
                     equals=(0, 1), timeout=DEADLINE_S)
    # And stopping the subscription removes its row
    polling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await polling
    await deliveries.aclose()  # type: ignore[attr-defined]
    assert conn.execute("SELECT count(*) FROM subscribers WHERE ns = ?", (namespace,)).fetchone()[0] == 0
    conn.close()


async def test_commits_elsewhere_in_the_file_cost_an_idle_consumer_no_write_lock(
    open_sqlite: SQLiteOpener, sqlite_broker: Broker, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an idle consumer whose write-locked claims are counted
    write_claims = 0
    real_claim = jobs._claim

    def counting_claim(conn: Any, request: jobs.StepRequest, now: float) -> Any:
        nonlocal write_claims
        write_claims += 1
        return real_claim(conn, request, now)

    monkeypatch.setattr(jobs, "_claim", counting_claim)
    deliveries = sqlite_broker.consume(["mine"])
    receiver = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    await eventually(lambda: write_claims >= 1, timeout=DEADLINE_S)
    # When another namespace in the same file commits hundreds of times
    other = await open_sqlite.broker(namespace=namespace + "x")
    for _ in range(200):
        await other.publish(Envelope(name="noise", queue="mine"))
    # Then the idle consumer looked (read-only) but never took the write lock for nothing
    assert write_claims <= 2
    assert not receiver.done()
    # And its own work still arrives
    sent = Envelope(name="mine.task", queue="mine")
    await sqlite_broker.publish(sent)
    delivery = await asyncio.wait_for(receiver, DEADLINE_S)
    assert delivery.envelope.id == sent.id
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_a_backlog_longer_than_one_read_is_delivered_without_new_commits(
    sqlite_broker: Broker, db_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a subscriber with more broadcasts waiting than one round reads
    monkeypatch.setattr(broadcasts, "BROADCAST_BATCH", 3)
    deliveries = sqlite_broker.consume([], channels=["ch"])
    first = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    await eventually(lambda: subscribers(db_path, namespace), equals=1, timeout=DEADLINE_S)  # registered
    sent = [Envelope(name=f"b{i}") for i in range(10)]
    for envelope in sent:
        await sqlite_broker.broadcast("ch", envelope)
    # Then all of them arrive, in order, with nothing else committed meanwhile
    got = [await asyncio.wait_for(first, DEADLINE_S)]
    async with asyncio.timeout(DEADLINE_S):
        while len(got) < len(sent):
            got.append(await anext(deliveries))  # type: ignore[arg-type]
    assert [d.envelope.id for d in got] == [e.id for e in sent]
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_a_sub_millisecond_lease_gets_the_default_lease_like_its_wire_form(sqlite_broker: Broker) -> None:
    # The wire format carries whole milliseconds, so 0.2 ms decodes as "no timeout"
    await sqlite_broker.publish(Envelope(name="t", queue="q", visibility_timeout=0.0002))
    [delivery] = await take(sqlite_broker, ["q"], 1)
    assert delivery.envelope.visibility_timeout is None
    assert delivery.lease_expires_at is not None
    assert (delivery.lease_expires_at - utcnow()).total_seconds() > sqlite_broker.lease_seconds - 5


@pytest.mark.parametrize("queues, channels", [([], ["ch"]), (["q"], []), (["q"], ["ch"])])
async def test_an_idle_subscription_sleeps_instead_of_spinning(
    sqlite_broker: Broker, monkeypatch: pytest.MonkeyPatch, queues: list[str], channels: list[str]
) -> None:
    # Given an idle subscription whose sleeps are counted
    poller = sqlite_broker._db.poller  # type: ignore[attr-defined]
    waits = 0
    real_wait = poller.wait

    async def counting_wait(*args: Any) -> None:
        nonlocal waits
        waits += 1
        await real_wait(*args)

    monkeypatch.setattr(poller, "wait", counting_wait)
    deliveries = sqlite_broker.consume(queues, channels=channels)
    receiver = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    # When nothing happens for a while
    await asyncio.sleep(0.3)
    # Then it went to sleep a handful of times, not thousands (a loop that never sleeps)
    assert 1 <= waits <= 10
    receiver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiver
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_dead_letters_in_quick_succession_keep_their_order_for_since(sqlite_broker: Broker) -> None:
    # Given messages dead-lettered back to back (SQLite's own clock has only milliseconds)
    sent = [Envelope(name="t", queue="dlq") for _ in range(20)]
    await sqlite_broker.publish_many(sent)
    deliveries = await take(sqlite_broker, ["dlq"], len(sent))
    for delivery in deliveries:
        await sqlite_broker.dead_letter(delivery, reason="quick")
    # Then every dead_at is distinct and in dead-letter order
    page = await sqlite_broker.list_dead_letters("dlq", limit=50)
    stamps = [entry.dead_at for entry in reversed(page.entries)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # And since=<an entry's dead_at> starts exactly at that entry
    cutoff = page.entries[5].dead_at
    picked = await sqlite_broker.replay_dead_letters("dlq", since=cutoff, dry_run=True)
    assert picked.entries[0].envelope.id == page.entries[5].envelope.id and picked.count == 6
