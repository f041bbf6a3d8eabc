"""What an operator can read while another process holds the SQLite write lock (a worker
stopped with SIGSTOP, or hung, in the middle of a transaction): every read answers, none
queues behind a write that waits for the lock, and the pending / delayed / in-flight
pages show each message where a claim would find it, without writing.

The adapters here get a short busy timeout: a read that took, or waited behind, the write
lock would fail with "stayed locked" instead of answering. No test asserts a duration.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from stem_core import Envelope
from stem_core.clock import utcnow
from stem_core.contract.types import WorkerHeartbeat
from stem_core.ops import Ops
from stem_core.ops.rates import RATE_RECORD_KEY, RATE_RECORD_KIND

from .sqlite_helpers import DEADLINE_S, SQLiteOpener, rows, take

# Long enough for the adapters' own writes before the lock is taken; far below DEADLINE_S.
SHORT_BUSY_S = 0.5


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process holds the file's write lock (``BEGIN IMMEDIATE``, never committed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE')\n"
         "print('held', flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def stored_states(path: Path, namespace: str) -> dict[str, str]:
    return dict(rows(path, "SELECT msg_id, state FROM jobs WHERE ns = ?", namespace))


def heartbeat(worker_id: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id, namespace="stem", host="h", pid=1, queues=["q"], concurrency=1, inflight=[],
        processed=0, failed=0, retried=0, paused_queues=[], version="test", timestamp=utcnow(),
    )


async def test_every_read_answers_while_another_process_holds_the_write_lock(
    open_sqlite: SQLiteOpener, db_path: Path, namespace: str
) -> None:
    # Given one message in each state (an expired lease and a due delayed one among them,
    # which a claim would move back to ready), a dead letter, a status, a heartbeat, a
    # record, an audit entry and a schedule
    broker = await open_sqlite.broker(busy_timeout=SHORT_BUSY_S)
    backend = await open_sqlite.backend(busy_timeout=SHORT_BUSY_S)
    now = utcnow()
    dead = Envelope(name="t", queue="q", id="dead")
    await broker.publish_many([Envelope(name="t", queue="q", id="gone", visibility_timeout=0.05), dead])
    expired, dead_delivery = sorted(await take(broker, ["q"], 2), key=lambda d: d.envelope.id != "gone")
    await broker.dead_letter(dead_delivery, reason="test")
    await broker.publish(Envelope(name="t", queue="q", id="held", visibility_timeout=600))
    [held] = await take(broker, ["q"], 1, consumer="w-held")
    await broker.publish_many([
        Envelope(name="t", queue="q", id="ready"),
        Envelope(name="t", queue="q", id="due", not_before=now + timedelta(seconds=0.05)),
        Envelope(name="t", queue="q", id="later", not_before=now + timedelta(hours=1)),
    ])
    await backend.set_status("task-1", "queued")
    await backend.set_heartbeat(heartbeat("w1"), ttl=600)
    await backend.put_record("k", "key", {"v": 1})
    await backend.append_audit({"action": "test"})
    await backend.save_schedule("s1", {"task": "t"}, None)
    await asyncio.sleep(0.1)  # the short lease expired and the delayed message fell due
    assert stored_states(db_path, namespace) == {"gone": "leased", "held": "leased", "ready": "ready",
                                                 "due": "delayed", "later": "delayed"}

    # When another process holds the write lock
    with write_lock_held(db_path):
        # Then every read answers, each message shown where a claim would find it
        async with asyncio.timeout(DEADLINE_S):
            [stats] = await broker.queue_stats(["q"])
            assert (stats.pending, stats.delayed, stats.inflight, stats.dead) == (3, 1, 1, 1)
            assert await broker.list_queues() == ["q"]
            assert {i.envelope.id for i in await broker.peek("q", state="pending")} == {"gone", "ready", "due"}
            assert [i.envelope.id for i in await broker.peek("q", state="delayed")] == ["later"]
            [lease] = await broker.peek("q", state="inflight")
            assert (lease.envelope.id, lease.lease_holder) == ("held", "w-held")
            page = await broker.peek_page("q", state="pending", limit=2)
            assert len(page.messages) == 2 and page.next_cursor is not None
            assert [e.envelope.id for e in (await broker.list_dead_letters("q")).entries] == ["dead"]
            assert await broker.get_dead_letter("q", "dead") is not None
            assert (await backend.get_status("task-1")) is not None
            assert [s.id for s in await backend.list_statuses()] == ["task-1"]
            assert [hb.worker_id for hb in await backend.list_heartbeats()] == ["w1"]
            assert await backend.get_heartbeat("w1") is not None
            assert await backend.get_record("k", "key") == {"v": 1}
            assert list(await backend.list_records("k")) == ["key"]
            assert [r["action"] for r in await backend.list_audit()] == ["test"]
            assert await backend.get_schedule("s1") is not None
            assert [doc["task"] for _, doc in await backend.list_schedules()] == ["t"]
    # And nothing was written: the stored states are as they were
    assert stored_states(db_path, namespace)["gone"] == "leased"
    assert stored_states(db_path, namespace)["due"] == "delayed"
    await broker.ack(expired)  # its holder can still settle the expired lease
    await broker.ack(held)


async def test_a_read_does_not_queue_behind_a_write_waiting_for_the_lock(
    open_sqlite: SQLiteOpener, db_path: Path
) -> None:
    # Given a backend whose writes wait long for the lock, and a heartbeat stored
    backend = await open_sqlite.backend(busy_timeout=60.0)
    await backend.set_heartbeat(heartbeat("w1"), ttl=600)
    with write_lock_held(db_path):
        # When a write of this process waits for the lock another process holds
        write = asyncio.create_task(backend.put_record("k", "key", {"v": 2}))
        for _ in range(5):
            await asyncio.sleep(0)  # the write is on the database thread, waiting
        # Then reads answer while that write still waits
        async with asyncio.timeout(DEADLINE_S):
            assert [hb.worker_id for hb in await backend.list_heartbeats()] == ["w1"]
            assert await backend.get_record("k", "key") is None
        assert not write.done()
    # And once the lock is let go the write goes in
    async with asyncio.timeout(DEADLINE_S):
        await write
    assert await backend.get_record("k", "key") == {"v": 2}


async def test_pages_show_overdue_messages_in_the_order_a_claim_takes_them(
    open_sqlite: SQLiteOpener, db_path: Path, namespace: str
) -> None:
    # Given ready messages, an expired lease and due delayed messages of mixed priorities,
    # none moved back to ready yet
    broker = await open_sqlite.broker()
    now = utcnow()
    await broker.publish_many([Envelope(name="t", queue="q", id="lease", priority=5, visibility_timeout=0.05)])
    await take(broker, ["q"], 1)  # its lease expires unsettled
    await broker.publish_many([
        Envelope(name="t", queue="q", id="r9", priority=9),
        Envelope(name="t", queue="q", id="r1", priority=1),
        Envelope(name="t", queue="q", id="d7", priority=7, not_before=now + timedelta(seconds=0.05)),
        Envelope(name="t", queue="q", id="d0", priority=0, not_before=now + timedelta(seconds=0.05)),
        Envelope(name="t", queue="q", id="r5", priority=5),
    ])
    await asyncio.sleep(0.1)
    assert stored_states(db_path, namespace)["lease"] == "leased"
    # When the pending messages are read by offset and page by page (one a page)
    by_offset = [i.envelope.id for i in await broker.peek("q", state="pending", limit=10)]
    paged: list[str] = []
    cursor = None
    while True:
        page = await broker.peek_page("q", state="pending", limit=1, cursor=cursor)
        paged += [m.envelope.id for m in page.messages]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert stored_states(db_path, namespace)["lease"] == "leased"
    # Then both give the order the claims then take: priority first, then age
    claimed = [d.envelope.id for d in await take(broker, ["q"], 6)]
    assert by_offset == paged == claimed
    assert claimed[:2] == ["r9", "d7"] and claimed[-1] == "d0"
    assert sorted(i.envelope.id for i in await broker.peek("q", state="inflight")) == sorted(claimed)


async def test_the_overview_answers_while_its_rate_record_waits_for_the_lock(
    open_sqlite: SQLiteOpener, db_path: Path
) -> None:
    # Given an Ops that keeps its rate samples in a record, on adapters that wait long for the lock
    broker = await open_sqlite.broker(busy_timeout=60.0)
    backend = await open_sqlite.backend(busy_timeout=60.0)
    await broker.publish(Envelope(name="t", queue="q"))
    ops = Ops(broker, backend, persist_rates=True)
    with write_lock_held(db_path):
        # When the overview is read twice while another process holds the write lock
        async with asyncio.timeout(DEADLINE_S):
            first = await ops.overview(["q"])
            second = await ops.overview(["q"])
        # Then both answered, and the rate record has not gone in yet
        assert first.queues[0].pending == second.queues[0].pending == 1
        assert await backend.get_record(RATE_RECORD_KIND, RATE_RECORD_KEY) is None
    # And closing the Ops waits for the record, which goes in once the lock is let go
    async with asyncio.timeout(DEADLINE_S):
        await ops.close()
    assert await backend.get_record(RATE_RECORD_KIND, RATE_RECORD_KEY) is not None


async def test_closing_does_not_wait_for_a_write_stuck_behind_the_lock(
    open_sqlite: SQLiteOpener, db_path: Path
) -> None:
    # Given a backend whose write waits for the lock another process holds (a stopped
    # worker), with a busy timeout far longer than anyone would wait for a close
    backend = await open_sqlite.backend(busy_timeout=600.0)
    with write_lock_held(db_path):
        write = asyncio.create_task(backend.put_record("k", "key", {"v": 3}))
        for _ in range(5):
            await asyncio.sleep(0)  # the write is on the database thread, waiting
        # When the backend is closed (`stem inspect` exiting after it printed)
        async with asyncio.timeout(DEADLINE_S):
            await backend.close()
        # Then the close returned, and the write still waits
        assert not write.done()
    # And once the lock is let go the write goes in all the same: nothing is lost
    async with asyncio.timeout(DEADLINE_S):
        await write
    assert rows(db_path, "SELECT key FROM records WHERE kind = 'k'") == [("key",)]
