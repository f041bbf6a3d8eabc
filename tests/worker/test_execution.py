"""Executing tasks in-process on every adapter: statuses, retries, dead letters, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

import pytest

from stem_core import Stem, TaskState, Worker
from stem_core.worker import Reject, Retry, TaskContext
from tests.contract.helpers import known
from tests.support import eventually
from tests.worker.helpers import all_in_state, one_active_two_reserved, running

FAST = {"retry_backoff": 0.01, "retry_backoff_max": 0.05}


async def test_async_and_sync_tasks_succeed_with_status_meta(app_factory: Callable[[], Stem]) -> None:
    # Given an app with an async and a sync task
    app = app_factory()
    seen: dict[str, object] = {}

    @app.task(name="math.add")
    async def add(ctx: TaskContext, a: int, b: int) -> int:
        seen["async_ctx"] = (ctx.task_id, ctx.attempt, ctx.queue, ctx.worker_id, ctx.envelope.name)
        return a + b

    @app.task(name="math.mul", queue="cpu")
    def mul(ctx: TaskContext, a: int, b: int) -> int:
        seen["sync_thread"] = threading.current_thread().name
        return a * b

    add_id = await app.enqueue("math.add", {"a": 2, "b": 3})
    mul_id = await app.enqueue("math.mul", {"a": 4, "b": 5})
    # When a burst worker drains both queues
    worker = Worker(app, concurrency=2, worker_id="w-exec", burst=True)
    await asyncio.wait_for(worker.run(), 60)
    # Then both succeeded with their results and the worker's meta
    add_status = await app.backend.get_status(add_id)
    mul_status = await app.backend.get_status(mul_id)
    assert add_status is not None and add_status.state is TaskState.SUCCEEDED and add_status.payload == 5
    assert mul_status is not None and mul_status.state is TaskState.SUCCEEDED and mul_status.payload == 20
    for status, queue in ((add_status, "default"), (mul_status, "cpu")):
        assert status.meta["worker"] == "w-exec"
        assert status.meta["queue"] == queue
        assert status.meta["started_at"] <= status.meta["finished_at"]
        assert status.error is None
    assert seen["async_ctx"] == (add_id, 0, "default", "w-exec", "math.add")
    assert str(seen["sync_thread"]).startswith("stem-task")
    assert worker.queues == ["cpu", "default"]
    assert worker.counters.succeeded == 2


async def test_failing_task_is_retried_then_dead_lettered(app_factory: Callable[[], Stem]) -> None:
    # Given a task that always raises, with two retries
    app = app_factory()
    runs: list[int] = []

    @app.task(name="always.fails", max_retries=2, **FAST)
    def fails(ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        raise ValueError("nope")

    task_id = await app.enqueue("always.fails")
    # When a burst worker runs until nothing is left
    worker = Worker(app, concurrency=1, burst=True)
    await asyncio.wait_for(worker.run(), 60)
    # Then it ran max_retries + 1 times and ended failed in the dead letters
    assert runs == [0, 1, 2]
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.FAILED and status.attempt == 2
    assert status.error is not None and status.error["type"] == "ValueError" and "nope" in status.error["traceback"]
    entry = await app.broker.get_dead_letter("default", task_id)
    assert entry is not None and entry.reason == "max-retries-exhausted"
    assert entry.meta["error"]["message"] == "nope"
    assert worker.counters.retried == 2 and worker.counters.failed == 1


async def test_status_sequence_of_a_task_that_is_retried_once(app_factory: Callable[[], Stem]) -> None:
    # Given a task that fails once (0.2 s explicit retry delay) then succeeds
    app = app_factory()

    @app.task(name="flaky", max_retries=3)
    async def flaky(ctx: TaskContext) -> str:
        if ctx.attempt == 0:
            raise Retry("try later", delay=0.2)
        return "ok"

    task_id = await app.enqueue("flaky")
    seen: list[TaskState] = []
    retried: list[object] = []

    async def watch() -> None:
        async for status in app.backend.watch(task_id):
            seen.append(status.state)
            if status.state is TaskState.RETRIED:
                retried.append(status)
            if status.state.is_terminal:
                return

    watcher = asyncio.create_task(watch())
    # When a worker runs it
    async with running(Worker(app, concurrency=1)):
        await asyncio.wait_for(watcher, 60)
    # Then every state was written, in order, and the retry says why and when
    assert seen == [TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRIED, TaskState.RUNNING, TaskState.SUCCEEDED]
    [status] = retried
    assert status.error["type"] == "Retry" and status.meta["retry_in"] == 0.2 and status.attempt == 0
    done = await app.backend.get_status(task_id)
    assert done is not None and done.attempt == 1 and done.payload == "ok"


async def test_reject_fails_without_retry(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    runs: list[int] = []

    @app.task(name="rejects", max_retries=5)
    def rejects(ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        raise Reject("bad input")

    task_id = await app.enqueue("rejects")
    await asyncio.wait_for(Worker(app, concurrency=1, burst=True).run(), 60)
    assert runs == [0]
    entry = await app.broker.get_dead_letter("default", task_id)
    assert entry is not None and entry.reason == "rejected"
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.FAILED and status.error["type"] == "Reject"


async def test_unknown_task_and_bad_args_are_dead_lettered_at_once(app_factory: Callable[[], Stem]) -> None:
    # Given a worker that knows one task, and envelopes it cannot run
    app = app_factory()

    @app.task(name="known", max_retries=3)
    async def known(ctx: TaskContext, x: int) -> int:
        return x

    @app.task(name="returns.set")
    async def returns_set(ctx: TaskContext) -> object:
        return {1, 2}

    unknown_id = await app.enqueue("nobody.knows.me", max_retries=3)
    missing_id = await app.enqueue("known", {})
    extra_id = await app.enqueue("known", {"x": 1, "y": 2})
    result_id = await app.enqueue("returns.set")
    # When a burst worker drains the queue
    await asyncio.wait_for(Worker(app, concurrency=2, burst=True).run(), 60)
    # Then each is dead-lettered on its first delivery, with a failed status saying why
    expected = {
        unknown_id: ("unregistered-task", "UnregisteredTask"),
        missing_id: ("invalid-envelope", "InvalidEnvelope"),
        extra_id: ("invalid-envelope", "InvalidEnvelope"),
        result_id: ("invalid-result", "InvalidResult"),
    }
    for task_id, (reason, error_type) in expected.items():
        entry = await app.broker.get_dead_letter("default", task_id)
        assert entry is not None and entry.reason == reason
        assert entry.envelope.attempt == 0
        status = await app.backend.get_status(task_id)
        assert status is not None and status.state is TaskState.FAILED and status.error["type"] == error_type


async def test_async_time_limit_cancels_the_task(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    cancelled = asyncio.Event()

    @app.task(name="hangs", time_limit=0.2)
    async def hangs(ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task_id = await app.enqueue("hangs")
    await asyncio.wait_for(Worker(app, concurrency=1, burst=True).run(), 60)
    assert cancelled.is_set()
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.FAILED
    assert status.error["type"] == "TimeLimitExceeded"


async def test_sync_time_limit_releases_the_slot(app_factory: Callable[[], Stem]) -> None:
    # Given a sync task stuck past its limit and a quick task behind it, concurrency 1
    app = app_factory()
    release = threading.Event()

    @app.task(name="stuck", time_limit=0.2)
    def stuck(ctx: TaskContext) -> None:
        release.wait(30)

    @app.task(name="quick")
    def quick(ctx: TaskContext) -> str:
        return "quick"

    stuck_id = await app.enqueue("stuck", priority=9)
    quick_id = await app.enqueue("quick")
    try:
        # When one worker with a single slot runs both
        await asyncio.wait_for(Worker(app, concurrency=1, burst=True).run(), 60)
        # Then the stuck one failed on its limit and the quick one still ran
        stuck_status = await app.backend.get_status(stuck_id)
        assert stuck_status is not None and stuck_status.state is TaskState.FAILED
        assert stuck_status.error["type"] == "TimeLimitExceeded"
        quick_status = await app.backend.get_status(quick_id)
        assert quick_status is not None and quick_status.state is TaskState.SUCCEEDED
    finally:
        release.set()


async def test_concurrency_bounds_running_tasks(app_factory: Callable[[], Stem]) -> None:
    # Given tasks that each wait until three of them run at once (a barrier, so reaching
    # the concurrency does not depend on timing; a broken barrier fails the task)
    app = app_factory()
    current = 0
    peak = 0
    lock = threading.Lock()
    barrier = threading.Barrier(3, timeout=30)

    @app.task(name="counted")
    def counted(ctx: TaskContext) -> None:
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
        barrier.wait()
        with lock:
            current -= 1

    ids = await app.enqueue_many([("counted", {}) for _ in range(24)])
    # When a worker with three slots drains them
    await asyncio.wait_for(Worker(app, concurrency=3, prefetch=5, burst=True).run(), 60)
    # Then all ran, three at a time and never more
    assert await all_in_state(app, ids, TaskState.SUCCEEDED)
    assert peak == 3


async def test_prefetch_bounds_held_deliveries(app_factory: Callable[[], Stem]) -> None:
    # Given slow tasks and a worker with concurrency 1, prefetch 3
    app = app_factory()
    gate = asyncio.Event()

    @app.task(name="gated")
    async def gated(ctx: TaskContext) -> None:
        await gate.wait()

    ids = await app.enqueue_many([("gated", {}) for _ in range(10)])
    worker = Worker(app, concurrency=1, prefetch=3)
    async with running(worker):
        # When it has filled up
        await eventually(lambda: one_active_two_reserved(worker), message="three held deliveries, one of them running")
        # Then the broker shows three in flight, one active and two reserved
        stats = (await app.broker.queue_stats(["default"]))[0]
        assert known(stats.inflight) == 3 and stats.pending == 7
        assert [h.state for h in worker.held].count("active") == 1
        gate.set()
        await eventually(lambda: all_in_state(app, ids, TaskState.SUCCEEDED), message="all done")


async def test_progress_and_extend_lease_from_async_and_sync_tasks(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    step = asyncio.Event()
    deadlines: list[object] = []

    @app.task(name="reports")
    async def reports(ctx: TaskContext) -> str:
        await ctx.progress(done=1, total=2)
        deadlines.append(await ctx.extend_lease(120))
        await step.wait()
        return "ok"

    @app.task(name="reports.sync")
    def reports_sync(ctx: TaskContext) -> str:
        ctx.progress({"phase": "sync"})
        deadlines.append(ctx.extend_lease(90))
        return "ok"

    task_id = await app.enqueue("reports")
    sync_id = await app.enqueue("reports.sync")
    async with running(Worker(app, concurrency=2)):
        status = await eventually(lambda: _progress(app, task_id), message="progress")
        assert status.meta["progress"] == {"done": 1, "total": 2}
        step.set()
        assert (await app.wait(task_id, timeout=60)).state is TaskState.SUCCEEDED
        assert (await app.wait(sync_id, timeout=60)).state is TaskState.SUCCEEDED
    assert len(deadlines) == 2


async def _progress(app: Stem, task_id: str) -> object:
    status = await app.backend.get_status(task_id)
    return status if status is not None and "progress" in status.meta else None


@pytest.mark.parametrize("blocking", ["sleep", "cpu"])
async def test_blocking_sync_task_keeps_its_lease(app_factory: Callable[[], Stem], blocking: str) -> None:
    # Given a sync task that blocks its thread for twice its 1.5 s lease. The lease is long
    # enough for the 0.75 s renewal margin to absorb GIL convoys (threads spinning on the
    # CPU slow every renewal: docs/worker.md, "Leases").
    producer = app_factory()
    lease = 1.5

    def register(app: Stem, runs: list[str]) -> None:
        @app.task(name="blocks", visibility_timeout=lease)
        def blocks(ctx: TaskContext) -> None:
            runs.append(ctx.task_id)
            end = time.monotonic() + 2 * lease
            while time.monotonic() < end:
                if blocking == "sleep":
                    time.sleep(2 * lease)
                else:
                    sum(range(1000))

    runs_a: list[str] = []
    runs_b: list[str] = []
    app_a, app_b = app_factory(), app_factory()
    register(producer, [])
    register(app_a, runs_a)
    register(app_b, runs_b)
    ids = [await producer.enqueue("blocks") for _ in range(2)]
    # When two workers (separate connections) compete for them
    async with running(Worker(app_a, concurrency=2, prefetch=2, worker_id="a")):
        async with running(Worker(app_b, concurrency=2, prefetch=2, worker_id="b")):
            await eventually(lambda: all_in_state(producer, ids, TaskState.SUCCEEDED), message="both done")
    # Then each ran exactly once: renewals from the loop kept the leases
    assert sorted(runs_a + runs_b) == sorted(ids)
