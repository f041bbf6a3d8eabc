"""Shutdown modes and burst mode, in-process on every adapter."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Callable

import pytest

from stem_core import Stem, TaskState, Worker
from stem_core.clock import utcnow
from stem_core.worker import TaskContext
from stem_core.worker.burst import queues_drained
from tests.support import eventually
from tests.worker.helpers import one_active_two_reserved, ready_envelopes, start


async def test_warm_shutdown_finishes_active_and_hands_back_reserved(app_factory: Callable[[], Stem]) -> None:
    # Given one active task and two reserved behind it
    app = app_factory()
    gate = asyncio.Event()

    @app.task(name="gated")
    async def gated(ctx: TaskContext) -> str:
        await gate.wait()
        return "done"

    ids = [await app.enqueue("gated") for _ in range(3)]
    worker = Worker(app, concurrency=1, prefetch=3)
    runner = await start(worker)
    await eventually(lambda: one_active_two_reserved(worker), message="one active, two reserved")
    # When a warm stop is requested
    worker.request_stop("warm")
    await eventually(lambda: len(worker.held) == 1, message="reserved handed back")
    assert not runner.done()
    gate.set()
    await asyncio.wait_for(runner, 60)
    # Then the active one finished and the reserved ones wait, unspent, in the queue
    assert worker.exit_code == 0
    first = await app.backend.get_status(ids[0])
    assert first is not None and first.state is TaskState.SUCCEEDED
    pending = await ready_envelopes(app)
    assert sorted(e.id for e in pending) == sorted(ids[1:])
    assert all(e.attempt == 0 for e in pending)


async def test_soft_shutdown_interrupts_after_the_grace_period_and_requeues(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    started = asyncio.Event()

    @app.task(name="forever")
    async def forever(ctx: TaskContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    task_id = await app.enqueue("forever")
    worker = Worker(app, concurrency=1, shutdown_grace=0.2)
    runner = await start(worker)
    await asyncio.wait_for(started.wait(), 60)
    worker.request_stop("soft")
    await asyncio.wait_for(runner, 60)
    assert worker.exit_code == 0
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.QUEUED and "shutdown" in status.meta["requeued_by"]
    [info] = await ready_envelopes(app)
    assert info.id == task_id and info.attempt == 0


async def test_hard_shutdown_hands_everything_back_now(app_factory: Callable[[], Stem]) -> None:
    # Given a sync task blocked in its thread and a reserved one
    app = app_factory()
    release = threading.Event()
    started = threading.Event()

    @app.task(name="blocked")
    def blocked(ctx: TaskContext) -> None:
        started.set()
        release.wait(30)

    ids = [await app.enqueue("blocked") for _ in range(2)]
    worker = Worker(app, concurrency=1, prefetch=2)
    runner = await start(worker)
    try:
        await eventually(lambda: started.is_set() and len(worker.held) == 2, message="active and reserved")
        # When a warm stop escalates to hard
        worker.request_stop("warm")
        worker.request_stop("hard")
        worker.request_stop("soft")  # never de-escalates
        await asyncio.wait_for(runner, 60)
        # Then both are back in the queue and the worker reports a hard exit
        assert worker.exit_code == 1 and worker.stop_mode == "hard"
        pending = await ready_envelopes(app)
        assert sorted(e.id for e in pending) == sorted(ids)
    finally:
        release.set()


async def test_request_stop_rejects_unknown_modes(app_factory: Callable[[], Stem]) -> None:
    worker = Worker(app_factory())
    with pytest.raises(ValueError):
        worker.request_stop("gentle")


@pytest.mark.parametrize(
    "options", [{"concurrency": 0}, {"prefetch": -1}, {"queues": ["bad queue"]}, {"heartbeat_interval": 0}, {"concurrency": True}]
)
def test_worker_options_are_validated(app_factory: Callable[[], Stem], options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Worker(app_factory(), **options)  # type: ignore[arg-type]


async def test_burst_waits_for_retries_that_are_due_soon(app_factory: Callable[[], Stem]) -> None:
    # Given a task that fails once with a 0.3 s retry delay
    app = app_factory()
    attempts: list[int] = []

    @app.task(name="second.time.lucky", max_retries=1, retry_backoff=0.3, retry_backoff_max=0.3)
    async def lucky(ctx: TaskContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 0:
            raise RuntimeError("first try fails")
        return "ok"

    task_id = await app.enqueue("second.time.lucky")
    # When a burst worker runs
    await asyncio.wait_for(Worker(app, burst=True).run(), 60)
    # Then it did not stop while the retry was delayed
    assert attempts == [0, 1]
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.SUCCEEDED


async def test_burst_sees_a_delayed_task_that_falls_due_while_it_checks(
    app_factory: Callable[[], Stem], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a delayed task that falls due just after the queue was counted (CI saw this as
    # a burst worker stopping before a retry, with the retry's peek finding nothing delayed)
    app = app_factory()
    due = utcnow() + timedelta(seconds=0.2)
    await app.enqueue("soon", eta=due)
    counted = app.broker.queue_stats

    async def count_then_fall_due(queues: list[str]) -> object:
        stats = await counted(queues)
        await eventually(lambda: utcnow() > due, message="the delayed task to fall due")
        return stats

    monkeypatch.setattr(app.broker, "queue_stats", count_then_fall_due)
    # When burst mode checks whether the queue is drained
    drained = await queues_drained(app.broker, ["default"])
    # Then it is not
    assert drained is False


async def test_burst_does_not_wait_for_far_future_tasks(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    await app.connect()
    if not app.broker.capabilities.peek:
        pytest.skip("a burst worker on a broker without peek cannot tell when delayed tasks fall due, so it waits")
    await app.enqueue("later", delay=3600)
    worker = Worker(app, burst=True, queues=["default"])
    await asyncio.wait_for(worker.run(), 60)
    assert worker.exit_code == 0
    assert (await app.broker.queue_stats(["default"]))[0].delayed == 1


async def test_heartbeat_describes_the_worker(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    gate = asyncio.Event()

    @app.task(name="hb.task", queue="hbq")
    async def hb_task(ctx: TaskContext) -> None:
        await gate.wait()

    task_id = await app.enqueue("hb.task")
    worker = Worker(app, worker_id="w-hb", concurrency=2, heartbeat_interval=0.05)
    runner = await start(worker)
    try:
        beat = await eventually(lambda: _beat_with_inflight(app, "w-hb"), message="heartbeat with the task")
        assert beat.queues == ["hbq"] and beat.concurrency == 2 and beat.version
        [entry] = beat.inflight
        assert entry["id"] == task_id and entry["name"] == "hb.task" and entry["queue"] == "hbq"
        assert entry["started_at"] and entry["lease_expires_at"]
    finally:
        gate.set()
        worker.request_stop("warm")
        await asyncio.wait_for(runner, 60)
    assert worker.counters.processed == 1


async def _beat_with_inflight(app: Stem, worker_id: str) -> object:
    beat = await app.backend.get_heartbeat(worker_id)
    return beat if beat is not None and beat.inflight and beat.inflight[0]["started_at"] else None
