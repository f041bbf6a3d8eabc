"""The sync API's engine on the in-process memory adapter: timeouts, closing, refusals,
errors that cross unchanged. (test_sync_api.py runs the producer paths on every adapter.)"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Iterator

import pytest

from stem_core import Stem, TaskState
from stem_core.adapters import connect_broker
from stem_core.adapters.memory import drop_stores
from stem_core.errors import BrokerUnavailable, CallTimeout, ConfigurationError, StemError
from tests.specs import require_service
from tests.support import DEADLINE_S


@pytest.fixture
def app() -> Iterator[Stem]:
    store = uuid.uuid4().hex
    app = Stem(broker=f"memory://{store}", namespace="tsync")
    yield app
    app.close_sync()
    drop_stores(store)


def test_a_call_that_outlives_call_timeout_is_cancelled_on_the_loop(app: Stem) -> None:
    cancelled = threading.Event()

    async def hang(_: Stem) -> None:
        try:
            await asyncio.sleep(DEADLINE_S)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(CallTimeout, match="call_timeout") as caught:
        app.sync_runner.call(hang, timeout=0.05, what="hang()")
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, StemError)
    assert cancelled.wait(DEADLINE_S)
    assert app.enqueue_sync("sync.after")  # the loop is still fine


def test_close_sync_cancels_calls_in_flight_and_a_later_call_starts_again(app: Stem) -> None:
    started = threading.Event()
    outcome: list[BaseException] = []

    async def hang(_: Stem) -> None:
        started.set()
        await asyncio.sleep(DEADLINE_S)

    def caller() -> None:
        try:
            app.sync_runner.call(hang, timeout=DEADLINE_S, what="hang()")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(DEADLINE_S)
    app.close_sync()
    thread.join(DEADLINE_S)
    assert len(outcome) == 1 and isinstance(outcome[0], StemError) and "closed during the call" in str(outcome[0])
    assert not app.sync_runner.started
    app.close_sync()  # idempotent
    with app:  # the context manager connects a new thread and closes it
        assert app.enqueue_sync("sync.again")
        assert app.sync_runner.starts == 2
    assert not app.sync_runner.started


def test_a_registered_task_enqueues_with_its_defaults(app: Stem) -> None:
    @app.task(name="sync.mail", queue="emails", priority=3)
    async def mail(ctx: object, to: str) -> None: ...

    task_id = mail.enqueue_sync({"to": "a@b.c"})

    async def envelope(twin: Stem) -> tuple[str, int, TaskState | None]:
        await twin.connect()
        [message] = await twin.broker.peek("emails", state="pending")
        status = await twin.backend.get_status(task_id)
        return message.envelope.queue, message.envelope.priority, status.state if status else None

    assert app.sync_runner.call(envelope, timeout=DEADLINE_S, what="peek") == ("emails", 3, TaskState.QUEUED)


async def test_an_app_of_adapter_instances_has_no_sync_api() -> None:
    store = uuid.uuid4().hex
    broker = await connect_broker(f"memory://{store}", namespace="tsync")
    try:
        app = Stem(broker=broker, backend=f"memory://{store}")
        with pytest.raises(ConfigurationError, match="adapter instances"):
            app.enqueue_sync("sync.nope")
        assert not app.sync_runner.started
    finally:
        await broker.close()
        drop_stores(store)


def test_an_unreachable_broker_raises_broker_unavailable() -> None:
    require_service("redis")  # the driver must be installed; port 1 answers nothing
    app = Stem(broker="redis://127.0.0.1:1/0", namespace="tsync")
    try:
        with pytest.raises(BrokerUnavailable):
            app.enqueue_sync("sync.down")
        with pytest.raises(BrokerUnavailable):
            app.connect_sync()
    finally:
        app.close_sync()


def test_a_sync_call_on_the_sync_thread_itself_is_refused(app: Stem) -> None:
    # Given an app whose sync thread runs
    app.connect_sync()
    loop = app.sync_runner.loop
    assert loop is not None

    # When code running on that loop calls the sync API
    async def on_the_loop() -> str:
        try:
            app.enqueue_sync("sync.loop")
        except StemError as exc:
            return str(exc)
        return "no error"

    message = asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(DEADLINE_S)

    # Then it is refused at once, pointing at the async API, and the app still works
    assert "use the async API" in message
    assert app.enqueue_sync("sync.loop")
