"""The synchronous producer API (docs/sync.md) on every adapter: from many threads, from
inside a running event loop, with a real worker, at exit and across a fork."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from stem_core import Stem, TaskState, Worker
from stem_core.errors import InvalidEnvelope, WaitTimeout
from stem_core.worker import TaskContext
from tests.support import DEADLINE_S
from tests.sync.conftest import Store

ROOT = Path(__file__).resolve().parents[2]
THREADS = 8
PER_THREAD = 50


def sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stem-sync-")]


def states(app: Stem, ids: list[str]) -> set[TaskState | None]:
    """The states of ``ids``, read through the sync thread's own backend connection."""

    async def read(twin: Stem) -> set[TaskState | None]:
        await twin.connect()
        found = set()
        for task_id in ids:
            status = await twin.backend.get_status(task_id)
            found.add(status.state if status is not None else None)
        return found

    return app.sync_runner.call(read, timeout=DEADLINE_S, what="read states")


def test_many_threads_enqueue_through_one_connection_set(app_factory: Callable[[], Stem], store: Store) -> None:
    # Given an app that has made one sync call (its loop thread and connections exist)
    app = app_factory()
    per_thread = max(10, int(PER_THREAD * store.spec.load))
    first = app.enqueue_sync("sync.job", {"thread": -1, "i": -1})
    runner = app.sync_runner
    twin = runner.app
    assert twin is not None
    broker, backend = twin.broker, twin.backend

    # When 8 threads enqueue concurrently
    def produce(thread: int) -> list[str]:
        return [app.enqueue_sync("sync.job", {"thread": thread, "i": i}) for i in range(per_thread)]

    with ThreadPoolExecutor(THREADS) as pool:
        ids = [task_id for batch in pool.map(produce, range(THREADS)) for task_id in batch]

    # Then every task landed, queued, with its own id
    assert len(set(ids)) == THREADS * per_thread and first not in ids
    assert states(app, ids) == {TaskState.QUEUED}
    counted = app.sync_runner.call(lambda a: broker.queue_stats(["default"]), timeout=DEADLINE_S, what="stats")
    assert counted[0].pending == THREADS * per_thread + 1
    # ... through the one loop thread and the one broker/backend pair it opened first
    assert runner.starts == 1 and runner.app is twin
    assert twin.broker is broker and twin.backend is backend and len(twin._owned) == 2
    assert len(sync_threads()) == 1
    # ... and the app's async side opened nothing
    assert not app.connected


def test_sync_calls_from_inside_a_running_event_loop(app_factory: Callable[[], Stem]) -> None:
    # Given sync helper code, as a framework would call it from its event loop's thread
    app = app_factory()

    def helper() -> tuple[str, list[str]]:
        one = app.enqueue_sync("sync.inside", {"n": 1})
        many = app.enqueue_many_sync([("sync.inside", {"n": 2}), ("sync.inside", {"n": 3}, {"priority": 5})])
        return one, many

    async def main() -> list[str]:
        one, many = helper()  # on the loop's own thread: must not deadlock
        # FastAPI's shape: `def` endpoints in a threadpool and `async def` ones on the loop,
        # at once; the async API uses this loop's connections, the sync calls their thread's
        endpoints = [asyncio.to_thread(helper) for _ in range(4)] + [app.enqueue("sync.inside", {"n": n}) for n in range(4)]
        results = await asyncio.gather(*endpoints)
        await app.close()  # closes this loop's connections and the sync thread too
        ids = [one, *many]
        for result in results:
            ids.extend([result[0], *result[1]] if isinstance(result, tuple) else [result])
        return ids

    # When it runs inside asyncio.run(...)
    ids = asyncio.run(main())

    # Then every call went through, and close() stopped the sync thread
    assert len(set(ids)) == 3 + 4 * 3 + 4
    assert not app.sync_runner.started and sync_threads() == []
    assert states(app, ids) == {TaskState.QUEUED}  # a later call starts a new thread
    assert app.sync_runner.starts == 2


def test_wait_sync_returns_a_real_workers_result(app_factory: Callable[[], Stem]) -> None:
    # Given tasks enqueued from sync code
    producer = app_factory()
    ids = producer.enqueue_many_sync([("sync.add", {"a": i, "b": 10}) for i in range(3)])
    failing = producer.enqueue_sync("sync.fail", max_retries=0)

    # When a worker (its own app and loop, in another thread) runs them
    worker_app = app_factory()

    @worker_app.task(name="sync.add")
    async def add(ctx: TaskContext, a: int, b: int) -> int:
        return a + b

    @worker_app.task(name="sync.fail")
    def fail(ctx: TaskContext) -> None:
        raise RuntimeError("sync.fail failed")

    async def run_worker() -> None:
        try:
            await Worker(worker_app, concurrency=2, burst=True).run()
        finally:
            await worker_app.close()

    thread = threading.Thread(target=asyncio.run, args=(run_worker(),), name="test-worker")
    thread.start()
    try:
        # Then wait_sync returns each terminal status with its result
        results = [producer.wait_sync(task_id, timeout=DEADLINE_S) for task_id in ids]
        failed = producer.wait_sync(failing, timeout=DEADLINE_S)
    finally:
        thread.join(DEADLINE_S)
    assert [s.state for s in results] == [TaskState.SUCCEEDED] * 3
    assert [s.payload for s in results] == [10, 11, 12]
    assert failed.state is TaskState.FAILED and failed.error is not None and failed.error["type"] == "RuntimeError"


def test_errors_cross_as_the_async_api_raises_them(app_factory: Callable[[], Stem]) -> None:
    app = app_factory()
    # bad input: the ValueError family, the same types as the async API
    with pytest.raises(InvalidEnvelope, match="not JSON"):
        app.enqueue_sync("sync.bad", {"x": object()})
    with pytest.raises(ValueError, match="priority"):
        app.enqueue_sync("sync.bad", priority=12)
    with pytest.raises(ValueError, match="item 1"):
        app.enqueue_many_sync([("sync.ok", {}), ("sync.bad", {}, {"nope": 1})])
    with pytest.raises(TypeError, match="nope"):
        app.enqueue_sync("sync.bad", nope=1)
    # a wait that runs out: WaitTimeout carrying the last status seen (none yet, on a loaded
    # machine, when the watch's first read is slower than the timeout)
    task_id = app.enqueue_sync("sync.never")
    with pytest.raises(WaitTimeout) as caught:
        app.wait_sync(task_id, timeout=0.2)
    last = caught.value.last_status
    assert last is None or last.state is TaskState.QUEUED
    with pytest.raises(ValueError, match="timeout"):
        app.wait_sync(task_id, timeout=-1)
    with pytest.raises(ValueError, match="call_timeout"):
        app.enqueue_sync("sync.bad", call_timeout=-1)


EXIT_SCRIPT = textwrap.dedent(
    """
    import os, sys, warnings
    from stem_core import Stem

    # Python 3.12+ warns about fork() in a process with threads (the child here only uses
    # what it starts itself, which is what is tested)
    warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)

    broker, backend, namespace = sys.argv[1:4]
    app = Stem(broker=broker, backend=backend, namespace=namespace)
    parent_id = app.enqueue_sync("sync.exit", {"who": "parent"})
    parent_thread = app.sync_runner.thread

    pid = os.fork()
    if pid == 0:  # the child: its own loop thread and connections, then a normal exit
        child_id = app.enqueue_sync("sync.exit", {"who": "child"})
        fresh = app.sync_runner.thread is not parent_thread and app.sync_runner.thread.is_alive()
        print("child", child_id, fresh, flush=True)
        sys.exit(0)
    _, code = os.waitpid(pid, 0)
    # the parent's connections survived the child's exit
    again = app.enqueue_sync("sync.exit", {"who": "parent-again"})
    print("parent", parent_id, again, os.waitstatus_to_exitcode(code), flush=True)
    # no close: the exit hook closes the connections and stops the thread
    """
)


def test_a_process_exits_cleanly_without_closing_and_forks_get_their_own_thread(
    app_factory: Callable[[], Stem], store: Store
) -> None:
    if not store.spec.cross_process:
        pytest.skip(f"{store.spec.id} lives in one process")
    # When a script enqueues, forks a child that enqueues, and exits without closing
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", EXIT_SCRIPT, store.broker_url, store.backend_url, store.namespace],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=DEADLINE_S,
    )
    # Then both exit 0 with nothing on stderr (no warning, no traceback) but the Redis
    # adapter's durability advice, logged once per connection on a server without persistence
    stderr = [line for line in result.stderr.splitlines() if "persists nothing" not in line]
    assert result.returncode == 0 and stderr == [], result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    child_id, fresh = lines["child"].split()
    parent_id, again, child_code = lines["parent"].split()
    assert fresh == "True" and child_code == "0"
    # ... and all three tasks landed
    app = app_factory()
    assert states(app, [parent_id, child_id, again]) == {TaskState.QUEUED}
