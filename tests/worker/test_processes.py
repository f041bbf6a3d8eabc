"""Real ``stem worker`` processes on every cross-process adapter: blocking tasks, poison
messages and the control plane. (The SIGKILL loop that lived here is scenario 1 of the
chaos harness now: tests/chaos, with a history checker that explains every duplicate.)"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from stem_core import Stem, TaskState
from stem_core.control import ControlClient
from tests.contract.helpers import counts
from tests.worker.apps.tasks import SIDE_QUEUE, read_log
from tests.specs import AdapterSpec
from tests.support import eventually
from tests.worker.helpers import WorkerProcess, all_in_state, live_worker_ids, ready_envelopes

Spawn = Callable[..., WorkerProcess]

GOOD_TASKS = 1000


async def _ids_of(procs: list[WorkerProcess], app: Stem) -> list[str]:
    """Worker ids of ``procs`` once each has written its first heartbeat."""
    pids = {p.pid for p in procs}

    async def ready() -> list[str] | None:
        beats = [hb for hb in await app.backend.list_heartbeats() if hb.pid in pids]
        return sorted(hb.worker_id for hb in beats) if len(beats) == len(pids) else None

    return await eventually(ready, message="worker heartbeats")


async def test_a_task_blocking_its_thread_for_three_leases_runs_once(producer: Stem, spawn: Spawn, log_dir: Path) -> None:
    # Given two workers and sync tasks that sleep or spin for 3x their 1 s lease
    workers = [spawn("-c", "2"), spawn("-c", "2")]
    await _ids_of(workers, producer)
    ids = [await producer.enqueue(name, {"seconds": 3.0}) for name in ("t.block_sleep", "t.block_cpu", "t.block_sleep", "t.block_cpu")]
    # When they have all finished
    await eventually(lambda: all_in_state(producer, ids, TaskState.SUCCEEDED), message="blocking tasks done")
    for proc in workers:
        proc.signal(signal.SIGTERM)
    assert [await proc.wait() for proc in workers] == [0, 0]
    # Then none was delivered twice: each started exactly once
    starts = Counter(task_id for event, task_id, _ in read_log(str(log_dir)) if event == "start")
    assert {task_id: starts[task_id] for task_id in ids} == {task_id: 1 for task_id in ids}


async def test_poison_and_unknown_tasks_end_in_dead_letters_and_good_ones_complete(
    producer: Stem, spawn: Spawn, log_dir: Path, process_spec: AdapterSpec
) -> None:
    # Given 1,000 good tasks (fewer on a slow test server: spec.load), one that always
    # raises (max_retries=2) and one nobody knows
    good = await producer.enqueue_many([("t.noop", {"i": i}) for i in range(int(GOOD_TASKS * process_spec.load))])
    poison = await producer.enqueue("t.poison")
    unknown = await producer.enqueue("t.does-not-exist")
    # When two burst workers drain the queue
    workers = [spawn("-c", "4", "--burst"), spawn("-c", "4", "--burst")]
    assert [await proc.wait(timeout=120) for proc in workers] == [0, 0]
    # Then the poison task ran max_retries + 1 times and is dead-lettered
    starts = Counter(task_id for event, task_id, _ in read_log(str(log_dir)) if event == "start")
    assert starts[poison] == 3
    poison_dead = await producer.broker.get_dead_letter("default", poison)
    assert poison_dead is not None and poison_dead.reason == "max-retries-exhausted"
    # And the unknown one was dead-lettered at once, without running
    unknown_dead = await producer.broker.get_dead_letter("default", unknown)
    assert unknown_dead is not None and unknown_dead.reason == "unregistered-task" and starts[unknown] == 0
    # And every good task completed
    assert await all_in_state(producer, good, TaskState.SUCCEEDED)
    assert all(starts[task_id] >= 1 for task_id in good)
    stats = (await producer.broker.queue_stats(["default"]))[0]
    assert counts(stats, "pending", "inflight", "dead") == (0, 0, 2)


async def test_control_plane_with_three_worker_processes(producer: Stem, spawn: Spawn, log_dir: Path) -> None:
    client = ControlClient(producer.broker, producer.backend, by="pytest")
    queues = ("-q", f"default,{SIDE_QUEUE}")
    workers = [spawn(*queues) for _ in range(3)]
    worker_ids = await _ids_of(workers, producer)

    # ping reaches all three
    ping = await client.send("ping", timeout=10)
    assert sorted(ping.replies) == worker_ids and ping.missing == [] and ping.ok

    # pause stops consumption of that queue across all workers
    paused = await client.send("pause", {"queues": [SIDE_QUEUE], "reason": "test"}, timeout=10)
    assert all(reply["paused"] == [SIDE_QUEUE] for reply in paused.replies.values()) and paused.ok
    side_id = await producer.enqueue("t.side")
    later = [await producer.enqueue("t.noop") for _ in range(6)]
    await eventually(lambda: all_in_state(producer, later, TaskState.SUCCEEDED), message="default-queue tasks")
    assert (await producer.broker.queue_stats([SIDE_QUEUE]))[0].pending == 1

    # ... and survives a worker restart
    restarted = workers.pop(0)
    restarted.signal(signal.SIGTERM)
    assert await restarted.wait() == 0
    workers.append(spawn(*queues))
    await _ids_of(workers, producer)
    more = [await producer.enqueue("t.noop") for _ in range(6)]
    await eventually(lambda: all_in_state(producer, more, TaskState.SUCCEEDED), message="tasks after restart")
    assert (await producer.broker.queue_stats([SIDE_QUEUE]))[0].pending == 1
    resumed = await client.send("resume", {"queues": [SIDE_QUEUE]}, targets=await _ids_of(workers, producer), timeout=10)
    assert resumed.ok
    assert (await producer.wait(side_id, timeout=60)).state is TaskState.SUCCEEDED

    # shutdown --mode warm lets the running task finish, then the worker exits 0
    slow_id = await producer.enqueue("t.slow", {"seconds": 1.5})
    running_on = await eventually(lambda: _running_worker(producer, slow_id), message="slow task running")
    target = next(p for p in workers if running_on.endswith(f"-{p.pid}"))
    result = await client.send("shutdown", {"mode": "warm"}, targets=[running_on], timeout=10)
    assert result.replies[running_on]["mode"] == "warm" and result.replies[running_on]["active"] == 1
    assert await target.wait() == 0
    assert (await producer.backend.get_status(slow_id)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
    assert running_on not in await live_worker_ids(producer)


async def _running_worker(app: Stem, task_id: str) -> str | None:
    status = await app.backend.get_status(task_id)
    return status.meta.get("worker") if status is not None and status.state is TaskState.RUNNING else None


@pytest.mark.parametrize(
    ("signals", "exit_code"),
    [((signal.SIGINT,), 0), ((signal.SIGQUIT,), 1), ((signal.SIGTERM, signal.SIGTERM), 1)],
    ids=["sigint-soft", "sigquit-hard", "second-signal-hard"],
)
async def test_interrupting_signals_requeue_the_running_task(
    producer: Stem, spawn: Spawn, signals: tuple[int, ...], exit_code: int
) -> None:
    # Given a worker running a long task (soft grace 0.5 s)
    proc = spawn("-c", "1", "--shutdown-grace", "500ms")
    [worker_id] = await _ids_of([proc], producer)
    task_id = await producer.enqueue("t.slow", {"seconds": 3600})
    await eventually(lambda: _running_worker(producer, task_id), message="task running")
    # When it is interrupted (each signal seen by the worker before the next is sent)
    for count, sig in enumerate(signals, start=1):
        proc.signal(sig)
        await eventually(lambda: proc.log().count("received SIG") >= count, message=f"signal {count} logged")
    # Then it exits with the mode's code and the task is back in the queue, unspent
    assert await proc.wait() == exit_code, proc.stderr()
    [info] = await ready_envelopes(producer)
    assert info.id == task_id and info.attempt == 0
    status = await producer.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.QUEUED
    assert worker_id not in await live_worker_ids(producer)
