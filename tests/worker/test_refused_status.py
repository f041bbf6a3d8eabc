"""A status write the backend refuses for good (issue 15: a value PostgreSQL cannot store)
ends in a dead letter ``status-write-failed`` after ``STATUS_WRITE_MAX_TRIES`` tries, not in
a redelivery every second forever."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from stem_core import Stem, TaskState, Worker
from stem_core.errors import StorageRejected
from stem_core.limits import STATUS_WRITE_MAX_TRIES
from stem_core.worker import TaskContext
from stem_core.worker.execution import STATUS_WRITE_FAILED

# A burst worker that loops on the message never finishes: the test fails on this instead.
BURST_DEADLINE_S = 45.0


async def test_a_result_the_backend_cannot_store_is_dead_lettered_after_a_few_tries(
    app_factory: Callable[[], Stem], worker_spec: Any
) -> None:
    # Given a task whose result holds a NUL character (PostgreSQL's jsonb refuses it for good)
    app = app_factory()
    runs: list[int] = []

    @app.task(name="nul.result")
    def nul(ctx: TaskContext) -> str:
        runs.append(ctx.attempt)
        return "a\x00b"

    task_id = await app.enqueue("nul.result")
    # When a burst worker drains the queue
    worker = Worker(app, concurrency=1, burst=True)
    await asyncio.wait_for(worker.run(), BURST_DEADLINE_S)
    # Then the task either succeeded (a backend that stores it) or, where the backend
    # refuses the write, was tried a few times and then dead-lettered
    entry = await app.broker.get_dead_letter("default", task_id)
    if entry is None:
        assert worker_spec.id != "postgres"
        status = await app.backend.get_status(task_id)
        assert status is not None and status.state is TaskState.SUCCEEDED and status.payload == "a\x00b"
        return
    assert entry.reason == STATUS_WRITE_FAILED
    assert entry.meta["error"]["type"] == "StorageRejected" and entry.meta["tries"] == STATUS_WRITE_MAX_TRIES
    assert len(runs) == STATUS_WRITE_MAX_TRIES
    assert (await app.broker.queue_stats(["default"]))[0].pending == 0


async def test_a_refused_running_status_dead_letters_without_looping(app_factory: Callable[[], Stem], worker_spec: Any) -> None:
    # Given a backend that refuses every status write of one task for good (as PostgreSQL
    # refused a 9 KB task name in its status index), and a healthy task beside it
    if worker_spec.id != "memory":
        return  # the policy lives in the worker: one adapter shows it
    app = app_factory()

    @app.task(name="poison")
    def poison(ctx: TaskContext) -> None:
        return None

    @app.task(name="fine")
    def fine(ctx: TaskContext) -> int:
        return 1

    await app.connect()
    bad = await app.enqueue("poison")
    good = await app.enqueue("fine")
    backend = app.backend
    original_set, original_write = backend.set_status, backend.write_status
    refused: list[str] = []

    def refuse(task_id: str, state: Any) -> None:
        if task_id == bad and TaskState(state).is_terminal:
            refused.append(str(state))
            raise StorageRejected("value too long for the status index")

    async def set_status(task_id: str, state: Any, **kw: Any) -> None:
        refuse(task_id, state)
        await original_set(task_id, state, **kw)

    async def write_status(write: Any) -> None:
        refuse(write.task_id, write.state)
        await original_write(write)

    backend.set_status = set_status  # type: ignore[method-assign]
    backend.write_status = write_status  # type: ignore[method-assign]
    # When a burst worker drains the queue
    worker = Worker(app, concurrency=1, burst=True)
    await asyncio.wait_for(worker.run(), BURST_DEADLINE_S)
    # Then the poison task was tried STATUS_WRITE_MAX_TRIES times and is a dead letter;
    # the healthy one succeeded
    entry = await app.broker.get_dead_letter("default", bad)
    assert entry is not None and entry.reason == STATUS_WRITE_FAILED
    assert "value too long" in entry.meta["error"]["message"]
    assert len(refused) == STATUS_WRITE_MAX_TRIES
    status = await app.backend.get_status(good)
    assert status is not None and status.state is TaskState.SUCCEEDED
