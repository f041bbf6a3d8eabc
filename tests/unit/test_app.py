"""``Stem``: registry, enqueue validation and statuses, enqueue_many, wait (memory adapter)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator

import pytest

from stem_core import Stem, TaskState
from stem_core.adapters.memory import drop_stores
from stem_core.clock import utcnow
from stem_core.errors import ConfigurationError, InvalidEnvelope, StemError, WaitTimeout
from stem_core.worker import TaskContext, backoff_seconds


@pytest.fixture
async def app() -> AsyncIterator[Stem]:
    name = uuid.uuid4().hex
    stem = Stem(broker=f"memory://{name}", backend=f"memory://{name}", namespace="unit")
    yield stem
    await stem.close()
    drop_stores(name)


def test_task_decorator_bare_and_with_options(app: Stem) -> None:
    # Given a bare and a configured task
    @app.task
    async def plain(ctx: TaskContext) -> None: ...

    @app.task(name="email.send", queue="emails", max_retries=3, time_limit=30, visibility_timeout=60, priority=5)
    def send(ctx: TaskContext, to: str, subject: str = "") -> str:
        return to

    # Then both are registered with their defaults and still callable
    assert plain.name == f"{__name__}.test_task_decorator_bare_and_with_options.<locals>.plain"
    assert plain.is_async and not send.is_async
    definition = app.tasks["email.send"]
    assert definition is send and app.registry is app.tasks
    assert (definition.queue, definition.max_retries, definition.time_limit, definition.visibility_timeout, definition.priority) == (
        "emails", 3, 30.0, 60.0, 5
    )
    assert send(None, "a@b.c") == "a@b.c"
    assert app.queues() == ["default", "emails"]
    assert send.args_problem({"to": "x"}) is None
    assert "missing" in (send.args_problem({}) or "")
    assert "unexpected" in (send.args_problem({"to": "x", "cc": "y"}) or "")


@pytest.mark.parametrize(
    "options",
    [{"queue": "bad queue"}, {"max_retries": -1}, {"time_limit": 0}, {"priority": 10}, {"visibility_timeout": "1"}, {"name": ""}],
)
def test_task_options_are_validated(app: Stem, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        app.task(**options)(lambda ctx: None)  # type: ignore[arg-type]


def test_task_needs_a_context_parameter_and_a_unique_name(app: Stem) -> None:
    with pytest.raises(ValueError, match="context"):
        app.task(name="noctx")(lambda: None)

    @app.task(name="dup")
    def first(ctx: TaskContext) -> None: ...

    with pytest.raises(ValueError, match="already registered"):

        @app.task(name="dup")
        def second(ctx: TaskContext) -> None: ...


async def test_enqueue_writes_queued_status_and_publishes(app: Stem) -> None:
    # Given a registered task
    @app.task(name="email.send", queue="emails", max_retries=3, priority=2, visibility_timeout=45)
    async def send(ctx: TaskContext, to: str) -> None: ...

    # When it is enqueued
    task_id = await app.enqueue("email.send", {"to": "a@b.c"})
    # Then the status is queued with the task's meta, and the broker holds the envelope
    status = await app.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.QUEUED and status.attempt == 0
    assert status.meta == {"task": "email.send", "queue": "emails", "max_retries": 3}
    [info] = await app.broker.peek("emails")
    envelope = info.envelope
    assert (envelope.id, envelope.args, envelope.priority, envelope.max_retries, envelope.visibility_timeout) == (
        task_id, {"to": "a@b.c"}, 2, 3, 45.0
    )


async def test_enqueue_options_override_task_defaults(app: Stem) -> None:
    @app.task(name="t", queue="q1", priority=1)
    async def t(ctx: TaskContext) -> None: ...

    task_id = await app.enqueue("t", queue="q2", priority=7, max_retries=4, task_id="my-id")
    assert task_id == "my-id"
    [info] = await app.broker.peek("q2")
    assert (info.envelope.priority, info.envelope.max_retries) == (7, 4)


async def test_unknown_task_names_may_be_enqueued(app: Stem) -> None:
    task_id = await app.enqueue("remote.only", {"x": 1})
    status = await app.backend.get_status(task_id)
    assert status is not None and status.meta == {"task": "remote.only", "queue": "default", "max_retries": 0}


async def test_delay_and_eta_make_the_task_wait(app: Stem) -> None:
    delayed = await app.enqueue("x", delay=60)
    at = await app.enqueue("x", eta=utcnow() + timedelta(minutes=5))
    by_timedelta = await app.enqueue("x", delay=timedelta(seconds=30))
    infos = await app.broker.peek("default", state="delayed")
    assert {i.envelope.id for i in infos} == {delayed, at, by_timedelta}
    stats = (await app.broker.queue_stats(["default"]))[0]
    assert (stats.pending, stats.delayed) == (0, 3)


@pytest.mark.parametrize(
    ("args", "options", "error"),
    [
        ({"x": object()}, {}, InvalidEnvelope),
        ({"x": float("nan")}, {}, InvalidEnvelope),
        (["not", "a", "dict"], {}, InvalidEnvelope),
        ({}, {"delay": 5, "eta": datetime.now(timezone.utc)}, ValueError),
        ({}, {"eta": datetime(2030, 1, 1)}, ValueError),
        ({}, {"delay": -1}, ValueError),
        ({}, {"priority": 12}, ValueError),
        ({}, {"queue": "no spaces"}, ValueError),
        ({}, {"task_id": ""}, ValueError),
        ({}, {"max_retries": -2}, ValueError),
    ],
)
async def test_bad_enqueues_are_rejected_before_anything_is_written(
    app: Stem, args: object, options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await app.enqueue("x", args, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await app.enqueue("", {})
    await app.connect()
    assert await app.broker.list_queues() == []
    assert await app.backend.list_statuses() == []


async def test_enqueue_many_returns_ids_in_order_in_one_publish(app: Stem) -> None:
    ids = await app.enqueue_many([("a", {"i": 1}), ("b", {"i": 2}, {"queue": "other", "priority": 3}), ("a", {"i": 3})])
    assert len(ids) == 3 and len(set(ids)) == 3
    pending = await app.broker.peek("default")
    assert [m.envelope.id for m in pending] == [ids[0], ids[2]]
    for task_id in ids:
        status = await app.backend.get_status(task_id)
        assert status is not None and status.state is TaskState.QUEUED
    assert await app.enqueue_many([]) == []


async def test_enqueue_many_validates_every_item_first(app: Stem) -> None:
    with pytest.raises(ValueError, match="item 1"):
        await app.enqueue_many([("a", {}), ("b", {"x": {1, 2}})])
    with pytest.raises(ValueError, match="unknown option"):
        await app.enqueue_many([("a", {}, {"colour": "red"})])
    with pytest.raises(ValueError, match="item 0"):
        await app.enqueue_many([("a",)])  # type: ignore[list-item]
    await app.connect()
    assert await app.broker.list_queues() == []


async def test_wait_returns_the_terminal_status(app: Stem) -> None:
    task_id = await app.enqueue("x")

    async def finish() -> None:
        await asyncio.sleep(0.05)
        await app.backend.set_status(task_id, TaskState.RUNNING)
        await app.backend.set_status(task_id, TaskState.SUCCEEDED, payload={"ok": True})

    finisher = asyncio.create_task(finish())
    status = await app.wait(task_id, timeout=30)
    await finisher
    assert status.state is TaskState.SUCCEEDED and status.payload == {"ok": True}


async def test_wait_timeout_carries_the_last_status(app: Stem) -> None:
    task_id = await app.enqueue("x")
    with pytest.raises(WaitTimeout) as caught:
        await app.wait(task_id, timeout=0.05)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.last_status is not None and caught.value.last_status.state is TaskState.QUEUED
    with pytest.raises(ValueError):
        await app.wait(task_id, timeout=-1)


async def test_connection_rules() -> None:
    from stem_core import connect_broker

    broker = await connect_broker("memory://unit-rules", namespace="ns1")
    try:
        with pytest.raises(ConfigurationError, match="backend"):
            await Stem(broker=broker).connect()
        with pytest.raises(ConfigurationError, match="namespace"):
            await Stem(broker=broker, backend="memory://unit-rules", namespace="ns2").connect()
        app = Stem(broker=broker, backend="memory://unit-rules")
        async with app:
            assert app.namespace == "ns1" and app.broker is broker
            with pytest.raises(StemError):
                app.configure(broker="memory://elsewhere")
        assert not app.connected
        await broker.list_queues()  # a given broker is left open for its owner
    finally:
        await broker.close()
        drop_stores("unit-rules")
    with pytest.raises(StemError, match="not connected"):
        Stem(broker="memory://x", backend="memory://x").broker
    with pytest.raises(ConfigurationError):
        Stem(broker=42)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    import random

    rng = random.Random(7)
    for attempt, ceiling in ((0, 2.0), (1, 4.0), (3, 16.0), (20, 300.0)):
        for _ in range(50):
            delay = backoff_seconds(attempt, rng=rng)
            assert ceiling * 0.75 <= delay <= ceiling
    assert backoff_seconds(2, base=0.1, maximum=0.3, jitter=0.0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        backoff_seconds(-1)


async def test_a_worker_without_a_prefetch_holds_a_full_claim_batch_of_its_broker(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a broker whose receive request returns up to 10 messages (as SQS's does)
    from stem_core import Worker
    from stem_core.adapters.memory import MemoryBroker, drop_stores

    monkeypatch.setattr(MemoryBroker, "claim_batch", 10)
    app = Stem(broker=f"memory://{namespace}", backend=f"memory://{namespace}", namespace=namespace)
    app.task(name="t.noop")(lambda ctx: None)
    try:
        default = Worker(app, queues=["default"], concurrency=2, burst=True)
        chosen = Worker(app, queues=["default"], concurrency=2, prefetch=3, burst=True)
        # When they run (and drain an empty queue at once)
        await asyncio.wait_for(default.run(), 30)
        await asyncio.wait_for(chosen.run(), 30)
        # Then the default prefetch is the batch, and an explicit one is kept
        assert default.prefetch == 10 and chosen.prefetch == 3
    finally:
        await app.close()
        drop_stores(namespace)
