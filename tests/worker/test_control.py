"""The control plane in-process on every adapter: commands, replies, persistence."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Callable

import pytest

from stem_core import Stem, TaskState, Worker
from stem_core.clock import parse_iso, utcnow
from stem_core.control import CONTROL_COMMANDS, Command, ControlClient, ControlResult, control_channel, paused_queues
from stem_core.control.liveness import STALE_AFTER_S
from stem_core.control.protocol import reply_queue_name
from stem_core.worker import TaskContext
from tests.contract.helpers import known
from tests.support import eventually
from tests.worker.helpers import one_active_two_reserved, ready_envelopes, running


def _client(app: Stem) -> ControlClient:
    return ControlClient(app.broker, app.backend, by="pytest")


async def test_ping_reaches_every_worker_and_names_the_missing(app_factory: Callable[[], Stem]) -> None:
    # Given two running workers, and the lingering (unexpired but stale) heartbeat of a dead one
    app = app_factory()
    await app.connect()
    async with running(Worker(app, worker_id="w1")), running(Worker(app_factory(), worker_id="w2")):
        dead = Worker(app, worker_id="w-dead").heartbeat()
        await app.backend.set_heartbeat(replace(dead, timestamp=utcnow() - timedelta(seconds=STALE_AFTER_S + 1)))
        # When pinged without targets
        result = await _client(app).send("ping", timeout=10)
        # Then both answer (the targeted set comes from live heartbeats: the dead one is not waited for)
        assert result.targeted == ["w1", "w2"]
        assert sorted(result.replies) == ["w1", "w2"] and result.missing == [] and result.ok
        assert result.replies["w1"]["pong"] is True
        # And a targeted ping names the worker that does not exist
        narrowed = await _client(app).send("ping", targets=["w2", "ghost"], timeout=0.5)
        assert sorted(narrowed.replies) == ["w2"] and narrowed.missing == ["ghost"] and not narrowed.ok
        assert narrowed.to_dict()["missing"] == ["ghost"]
    # And the reply queues were cleaned up
    assert not [q for q in await app.broker.list_queues() if q.startswith("stem.reply.")]


async def test_stats_and_inspect_describe_active_and_reserved_work(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    gate = asyncio.Event()

    @app.task(name="held")
    async def held(ctx: TaskContext) -> None:
        await gate.wait()

    ids = [await app.enqueue("held") for _ in range(3)]
    worker = Worker(app, worker_id="w-insp", concurrency=1, prefetch=3)
    async with running(worker):
        await eventually(lambda: one_active_two_reserved(worker), message="one active, two reserved")
        await _client(app).send("revoke", {"task_ids": ["some-other-id"]}, timeout=5)
        result = await _client(app).send("inspect", timeout=10)
        report = result.replies["w-insp"]
        assert [a["id"] for a in report["active"]] == [ids[0]]
        assert report["active"][0]["runtime"] >= 0 and report["active"][0]["lease_expires_at"]
        assert sorted(r["id"] for r in report["reserved"]) == sorted(ids[1:])
        assert report["revoked"] == ["some-other-id"]
        stats = (await _client(app).send("stats", timeout=10)).replies["w-insp"]
        assert stats["active"] == 1 and stats["reserved"] == 2 and stats["concurrency"] == 1 and stats["prefetch"] == 3
        gate.set()


async def test_revoke_cancels_queued_and_terminates_running(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    started = asyncio.Event()

    @app.task(name="long")
    async def long(ctx: TaskContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    running_id = await app.enqueue("long")
    await app.connect()
    async with running(Worker(app, worker_id="w-rev", concurrency=1, prefetch=1)):
        await asyncio.wait_for(started.wait(), 60)
        queued_id = await app.enqueue("long")
        # When both are revoked, the running one with terminate
        result = await _client(app).send("revoke", {"task_ids": [running_id, queued_id], "terminate": True, "reason": "test"}, timeout=10)
        assert result.replies["w-rev"]["terminated"] == [running_id]
        # Then both end cancelled (the queued one when it is delivered)
        first = await app.wait(running_id, timeout=60)
        second = await app.wait(queued_id, timeout=60)
    for status in (first, second):
        assert status.state is TaskState.CANCELLED and status.meta["cancel_reason"] == "revoked"
        assert status.meta["revoked_by"] == "pytest"


async def test_revocation_is_honoured_by_a_worker_started_later(app_factory: Callable[[], Stem]) -> None:
    # Given a task revoked while no worker runs
    app = app_factory()
    ran: list[str] = []

    @app.task(name="victim")
    async def victim(ctx: TaskContext) -> None:
        ran.append(ctx.task_id)

    task_id = await app.enqueue("victim")
    await app.connect()
    result = await _client(app).send("revoke", {"task_ids": [task_id]}, timeout=0.3)
    assert result.targeted == [] and result.replies == {} and not result.ok
    # When a worker starts afterwards
    await asyncio.wait_for(Worker(app, burst=True).run(), 60)
    # Then it cancels the task instead of running it
    assert ran == []
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.CANCELLED


async def test_pause_stops_fetching_and_survives_a_restart(app_factory: Callable[[], Stem]) -> None:
    # Given a worker on two queues
    app = app_factory()

    @app.task(name="on.a", queue="qa")
    async def on_a(ctx: TaskContext) -> str:
        return "a"

    @app.task(name="on.b", queue="qb")
    async def on_b(ctx: TaskContext) -> str:
        return "b"

    await app.connect()
    async with running(Worker(app, worker_id="w-p1")):
        # When qa is paused
        result = await _client(app).send("pause", {"queues": ["qa"], "reason": "deploy"}, timeout=10)
        assert result.replies["w-p1"]["paused"] == ["qa"]
        a_id = await app.enqueue("on.a")
        b_id = await app.enqueue("on.b")
        # Then a later task on qb runs while the older one on qa waits
        assert (await app.wait(b_id, timeout=60)).state is TaskState.SUCCEEDED
        assert (await app.broker.queue_stats(["qa"]))[0].pending == 1
    record = (await paused_queues(app.backend))["qa"]
    assert record["reason"] == "deploy" and record["by"] == "pytest"
    # And a restarted worker stays paused
    second = Worker(app, worker_id="w-p2")
    async with running(second):
        assert second.paused == {"qa"}
        b2 = await app.enqueue("on.b")
        assert (await app.wait(b2, timeout=60)).state is TaskState.SUCCEEDED
        assert (await app.broker.queue_stats(["qa"]))[0].pending == 1
        # Until it is resumed
        resumed = await _client(app).send("resume", {"queues": ["qa"]}, targets=["w-p2"], timeout=10)
        assert resumed.replies["w-p2"]["paused"] == []
        assert (await app.wait(a_id, timeout=60)).state is TaskState.SUCCEEDED
    assert await paused_queues(app.backend) == {}


async def test_pause_hands_back_reserved_deliveries(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    gate = asyncio.Event()

    @app.task(name="gated", queue="qg")
    async def gated(ctx: TaskContext) -> None:
        await gate.wait()

    ids = [await app.enqueue("gated") for _ in range(3)]
    worker = Worker(app, worker_id="w-g", concurrency=1, prefetch=3)
    async with running(worker):
        await eventually(lambda: one_active_two_reserved(worker), message="one active, two reserved")
        await _client(app).send("pause", {"queues": ["qg"]}, timeout=10)
        # The two reserved ones go back to the queue with their attempt unchanged
        await eventually(lambda: len(worker.held) == 1, message="reserved handed back")
        stats = (await app.broker.queue_stats(["qg"]))[0]
        assert stats.pending == 2 and known(stats.inflight) == 1
        pending = await ready_envelopes(app, "qg")
        assert sorted(e.id for e in pending) == sorted(ids[1:])
        assert all(e.attempt == 0 for e in pending)
        gate.set()


async def test_shutdown_command_stops_the_worker_after_running_tasks(app_factory: Callable[[], Stem]) -> None:
    # Given a worker running a task that finishes only when the test lets it
    app = app_factory()
    started = asyncio.Event()
    finish = asyncio.Event()

    @app.task(name="finishing")
    async def finishing(ctx: TaskContext) -> str:
        started.set()
        await finish.wait()
        return "finished"

    task_id = await app.enqueue("finishing")
    worker = Worker(app, worker_id="w-sd")
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 60)
    # When a warm shutdown is sent while the task runs
    result = await _client(app).send("shutdown", {"mode": "warm"}, targets=["w-sd"], timeout=10)
    assert result.replies["w-sd"] == {"mode": "warm", "active": 1}
    # Then the worker waits for the task, and exits once it is done
    assert not runner.done()
    finish.set()
    await asyncio.wait_for(runner, 60)
    assert worker.exit_code == 0
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.SUCCEEDED
    # And its heartbeat is gone from the live list soon after
    await eventually(lambda: _no_heartbeats(app), message="heartbeat expiry")


async def _no_heartbeats(app: Stem) -> bool:
    return not await app.backend.list_heartbeats()


async def test_old_and_foreign_commands_are_ignored(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    await app.connect()
    async with running(Worker(app, worker_id="w-old")):
        channel = control_channel(app.broker.namespace)
        for request_id, sent_at, targets in (("old1", utcnow() - timedelta(seconds=60), None), ("foreign1", utcnow(), ["other"])):
            reply_to = reply_queue_name(request_id)
            command = Command("ping", {}, request_id, reply_to, targets, sent_at)
            await app.broker.broadcast(channel, command.to_envelope())
        # A fresh ping is answered, so the worker has seen the earlier broadcasts
        assert (await _client(app).send("ping", targets=["w-old"], timeout=10)).ok
        for request_id in ("old1", "foreign1"):
            stats = (await app.broker.queue_stats([reply_queue_name(request_id)]))[0]
            assert stats.pending == 0


async def test_bad_arguments_are_rejected_before_sending(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    await app.connect()
    client = _client(app)
    for command, arguments in (
        ("reboot", {}),
        ("revoke", {}),
        ("revoke", {"task_ids": ["x"], "terminate": "yes"}),
        ("shutdown", {"mode": "now"}),
        ("pause", {"queues": ["bad queue"]}),
        ("pause", {"queues": ["q"], "until": -5}),
        ("ping", {"request_id": "x"}),
    ):
        with pytest.raises(ValueError):
            await client.send(command, arguments, timeout=1)
    assert set(CONTROL_COMMANDS) == {"ping", "stats", "inspect", "revoke", "shutdown", "pause", "resume"}
    assert ControlResult("ping", [], {}, []).ok is False


async def test_terminate_releases_a_sync_task_that_ignores_it(app_factory: Callable[[], Stem]) -> None:
    # Given a sync task blocked in its thread, that only looks at ctx.cancelled now and then
    app = app_factory()
    started = threading.Event()
    noticed = threading.Event()

    @app.task(name="sync.blocked")
    def blocked(ctx: TaskContext) -> None:
        started.set()
        for _ in range(3000):
            if ctx.cancelled:
                noticed.set()
                ctx.raise_if_cancelled()
            time.sleep(0.01)

    task_id = await app.enqueue("sync.blocked")
    await app.connect()
    async with running(Worker(app, worker_id="w-term", concurrency=1)):
        await eventually(started.is_set, message="sync task started")
        # When it is revoked with terminate
        result = await _client(app).send("revoke", {"task_ids": [task_id], "terminate": True}, timeout=10)
        assert result.replies["w-term"]["terminated"] == [task_id]
        # Then its status is cancelled and the thread was told
        status = await app.wait(task_id, timeout=60)
        assert status.state is TaskState.CANCELLED
        await eventually(noticed.is_set, message="ctx.cancelled seen by the thread")


async def test_a_pause_with_an_expiry_ends_by_itself(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()

    @app.task(name="later", queue="qe")
    async def later(ctx: TaskContext) -> str:
        return "ran"

    await app.connect()
    worker = Worker(app, worker_id="w-exp", heartbeat_interval=0.1)
    async with running(worker):
        await _client(app).send("pause", {"queues": ["qe"], "until": 0.5}, timeout=10)
        assert worker.paused == {"qe"}
        until = parse_iso((await paused_queues(app.backend))["qe"]["until"])
        task_id = await app.enqueue("later")
        # The record expires and the next refresh resumes the queue: not before `until`
        status = await app.wait(task_id, timeout=60)
        assert status.state is TaskState.SUCCEEDED
        assert parse_iso(status.meta["started_at"]) >= until
    assert await paused_queues(app.backend) == {}


def _register_probe(app: Stem, name: str) -> None:
    @app.task(name=name)
    async def probe(ctx: TaskContext) -> None:
        return None


async def _worker_completes(app: Stem, name: str, worker_id: str) -> None:
    """A ``name`` task enqueued before the worker starts succeeds once it runs."""
    task_id = await app.enqueue(name)
    async with running(Worker(app, worker_id=worker_id)):
        assert (await app.wait(task_id, timeout=30)).state == TaskState.SUCCEEDED


async def test_a_control_channel_that_refuses_the_hello_does_not_stop_the_worker(
    app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker whose broadcasts fail (moto's SNS refuses a publish to a topic with a
    # subscriber queue deleted under it; a real broker may refuse for other reasons)
    from stem_core.errors import BrokerUnavailable

    app = app_factory()
    _register_probe(app, "after.refused.hello")
    await app.connect()

    async def refuse(channel: str, envelope: object) -> None:
        raise BrokerUnavailable("the topic does not exist")

    monkeypatch.setattr(app.broker, "broadcast", refuse)
    # When a worker starts, Then it says so once and works its queue all the same
    await _worker_completes(app, "after.refused.hello", "w-no-hello")
    assert "could not confirm the control subscription" in caplog.text


async def test_a_worker_whose_backend_does_not_answer_at_startup_waits_for_it(
    app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a result backend that fails the first two heartbeats (a SQLite file whose
    # writer lock a SIGSTOPped worker held for 15 s crashed the next worker at startup)
    from stem_core.errors import BackendUnavailable
    from stem_core.worker import runtime

    app = app_factory()
    _register_probe(app, "after.backend.wait")
    await app.connect()
    real = app.backend.set_heartbeat
    refused = []

    async def flaky(*args: object, **kwargs: object) -> None:
        if len(refused) < 2:
            refused.append(1)
            raise BackendUnavailable("database stayed locked by another writer for more than 15s")
        await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.backend, "set_heartbeat", flaky)
    monkeypatch.setattr(runtime, "STARTUP_RETRY_S", 0.1)
    # When a worker starts, Then it warns, waits, and works its queue once the backend answers
    await _worker_completes(app, "after.backend.wait", "w-wait-backend")
    assert len(refused) == 2
    assert caplog.text.count("cannot reach the result backend yet") == 2
