"""``ignore_result=True`` per task and per app (Celery's switch) on every adapter: no
queued, running or succeeded status is stored, failures still are, and the messages are
settled exactly as with results stored."""

from __future__ import annotations

import asyncio
from typing import Callable

import pytest

from stem_core import Stem, TaskState, Worker
from stem_core.envelope import IGNORE_RESULT_HEADER
from stem_core.worker import TaskContext


async def test_a_task_that_ignores_its_result_runs_and_stores_no_status(app_factory: Callable[[], Stem]) -> None:
    # Given a task with ignore_result=True beside an ordinary one
    app = app_factory()
    ran: list[int] = []

    @app.task(name="quiet.add", ignore_result=True)
    async def quiet(ctx: TaskContext, a: int) -> int:
        await ctx.progress({"half": True})  # a progress write is skipped as well
        ran.append(a)
        return a

    @app.task(name="loud.add")
    async def loud(ctx: TaskContext, a: int) -> int:
        return a

    # (one batch holding both kinds: the statuses of the others are still written first)
    *quiet_ids, loud_id = await app.enqueue_many([*(("quiet.add", {"a": i}) for i in range(5)), ("loud.add", {"a": 1})])
    # Then nothing was stored for the quiet ones at enqueue time
    assert [await app.backend.get_status(i) for i in quiet_ids] == [None] * 5
    assert (await app.backend.get_status(loud_id)).state is TaskState.QUEUED  # type: ignore[union-attr]
    # When a burst worker drains the queue
    worker = Worker(app, concurrency=2, burst=True)
    await asyncio.wait_for(worker.run(), 60)
    # Then every task ran once, only the ordinary one has a status, and nothing is left
    assert sorted(ran) == list(range(5))
    assert [await app.backend.get_status(i) for i in quiet_ids] == [None] * 5
    assert (await app.backend.get_status(loud_id)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
    assert worker.counters.succeeded == 6
    stats = (await app.broker.queue_stats(["default"]))[0]
    assert stats.pending == 0 and stats.inflight in (0, None)


async def test_a_failure_is_stored_even_when_the_result_is_ignored(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()

    @app.task(name="quiet.fails", ignore_result=True, max_retries=0)
    async def fails(ctx: TaskContext) -> None:
        raise ValueError("boom")

    task_id = await app.enqueue("quiet.fails")
    await asyncio.wait_for(Worker(app, concurrency=1, burst=True).run(), 60)
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.FAILED
    assert status.error["message"] == "boom"


async def test_the_app_default_applies_unless_a_task_says_otherwise(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    app.ignore_result = True

    @app.task(name="by.app")
    async def by_app(ctx: TaskContext) -> str:
        return "a"

    @app.task(name="kept", ignore_result=False)
    async def kept(ctx: TaskContext) -> str:
        return "k"

    by_app_id = await app.enqueue("by.app")
    kept_id = await app.enqueue("kept")
    # An unregistered name follows the app's default too
    other = app.build_envelope("elsewhere.task")
    assert other.headers == {IGNORE_RESULT_HEADER: "true"} and other.ignores_result
    # and one envelope can override both (the beat does, to keep a scheduled run's status)
    assert not app.build_envelope("by.app", ignore_result=False).ignores_result
    await asyncio.wait_for(Worker(app, concurrency=1, burst=True).run(), 60)
    assert await app.backend.get_status(by_app_id) is None
    kept_status = await app.backend.get_status(kept_id)
    assert kept_status is not None and kept_status.state is TaskState.SUCCEEDED and kept_status.payload == "k"


def test_ignore_result_must_be_a_bool() -> None:
    app = Stem(broker="memory://", namespace="ignore-result")
    with pytest.raises(ValueError, match="ignore_result must be True, False or None"):
        app.task(name="x", ignore_result="yes")(lambda ctx: None)  # type: ignore[arg-type]
    from stem_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="ignore_result must be True or False"):
        Stem(broker="memory://", ignore_result=1)  # type: ignore[arg-type]


def test_the_header_travels_in_the_wire_format() -> None:
    from stem_core.envelope import Envelope

    app = Stem(broker="memory://", namespace="ignore-result", ignore_result=True)
    env = app.build_envelope("any.task", {"a": 1})
    again = Envelope.from_json(env.to_json())
    assert again.ignores_result and again.headers[IGNORE_RESULT_HEADER] == "true"
