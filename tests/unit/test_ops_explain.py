"""``Ops.explain``: where a task is and every reason it is not running (memory adapter)."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, TaskState
from stem_core.clock import utcnow
from stem_core.control.pause import pause_queues
from stem_core.ops import Ops
from tests.cli.helpers import claim, heartbeat, inflight_entry, open_memory


@pytest.fixture
async def env(namespace: str) -> AsyncIterator[tuple[Ops, Any, Any]]:
    ops, broker, backend, _ = await open_memory(namespace, stale_after=5.0)
    yield ops, broker, backend
    await broker.close()
    await backend.close()


async def enqueue(ops: Ops, queue: str = "q", **kw: Any) -> str:
    return (await ops.enqueue("t.work", {"x": 1}, queue=queue, **kw)).detail.ids[0]


def codes(ex: Any) -> list[str]:
    return [b.code for b in ex.blockers]


async def test_unknown_id(env: tuple[Ops, Any, Any]) -> None:
    ops, _, _ = env
    ex = await ops.explain("no-such-task")
    assert ex.state == "unknown" and codes(ex) == ["unknown-id"] and not ex.found


async def test_queued_with_no_worker_names_its_position_and_the_blocker(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    await enqueue(ops)
    task = await enqueue(ops)
    await backend.set_heartbeat(heartbeat("w1", ["other"]))
    ex = await ops.explain(task)
    assert ex.state == "queued" and ex.position == 2 and ex.queue == "q"
    assert codes(ex) == ["no-workers"] and "serve other" in ex.blockers[0].message
    assert ex.envelope["id"] == task and ex.status["state"] == "queued"


async def test_paused_queue_comes_first(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    task = await enqueue(ops)
    await pause_queues(backend, ["q"], reason="db migration", by="ann")
    ex = await ops.explain(task)
    assert codes(ex) == ["paused", "no-workers"]
    assert "ann: db migration" in ex.blockers[0].message and ex.blockers[0].fix == "stem broadcast resume --queue q"


async def test_all_workers_busy(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await enqueue(ops)
    task = await enqueue(ops)
    held = await claim(broker, ["q"], "w1", 1)
    await backend.set_heartbeat(heartbeat("w1", ["q"], concurrency=1, inflight=[inflight_entry(held[0])]))
    ex = await ops.explain(task)
    assert ex.state == "queued" and ex.position == 1 and codes(ex) == ["workers-busy"]


async def test_free_workers_mean_it_is_behind_others(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    await enqueue(ops)
    task = await enqueue(ops)
    await backend.set_heartbeat(heartbeat("w1", ["q"], concurrency=4))
    ex = await ops.explain(task)
    assert codes(ex) == ["behind-others"] and "1 message(s) ahead" in ex.blockers[0].message


async def test_a_worker_that_paused_the_queue_itself_does_not_serve_it(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    task = await enqueue(ops)
    await backend.set_heartbeat(heartbeat("w1", ["q"], paused=["q"]))
    assert codes(await ops.explain(task)) == ["no-workers"]


async def test_delayed_is_not_due(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    task = await enqueue(ops, delay=3600)
    await backend.set_heartbeat(heartbeat("w1", ["q"]))
    ex = await ops.explain(task)
    assert ex.state == "delayed" and codes(ex) == ["not-due"] and ex.due_at > utcnow()
    assert "in 59m" in ex.blockers[0].message or "in 1h" in ex.blockers[0].message


async def test_running_on_a_live_worker(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    task = await enqueue(ops)
    held = await claim(broker, ["q"], "w1", 1)
    await backend.set_heartbeat(heartbeat("w1", ["q"], inflight=[inflight_entry(held[0], running_for=12)]))
    ex = await ops.explain(task)
    assert ex.state == "running" and codes(ex) == ["running"] and ex.lease.holder == "w1"
    assert "running on w1 for 12s" in ex.summary


async def test_prefetched_behind_a_long_task(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await enqueue(ops)
    task = await enqueue(ops)
    first, second = await claim(broker, ["q"], "w1", 2)
    await backend.set_heartbeat(heartbeat("w1", ["q"], concurrency=1,
                                          inflight=[inflight_entry(first), inflight_entry(second, active=False)]))
    ex = await ops.explain(task)
    assert ex.state == "leased" and codes(ex) == ["prefetched"] and "behind 1 running" in ex.blockers[0].message


async def test_held_by_a_dead_worker(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    task = await enqueue(ops)
    held = await claim(broker, ["q"], "w-dead", 1)
    await backend.set_heartbeat(heartbeat("w-dead", ["q"], age=45, inflight=[inflight_entry(held[0])]))
    ex = await ops.explain(task)
    assert ex.state == "leased" and codes(ex) == ["dead-holder"] and ex.lease.stuck
    assert ex.blockers[0].fix == f"stem requeue q --id {task}"


async def test_dead_letter(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    task = await enqueue(ops)
    (held,) = await claim(broker, ["q"], "w1", 1)
    await broker.dead_letter(held, reason="max-retries-exhausted")
    ex = await ops.explain(task)
    assert ex.state == "dead" and codes(ex) == ["dead"] and "max-retries-exhausted" in ex.blockers[0].message
    assert ex.blockers[0].fix == f"stem dlq replay q --id {task}" and ex.dead_letter["reason"] == "max-retries-exhausted"


async def test_done_task(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    await backend.set_status("t-done", TaskState.FAILED, error={"type": "KeyError", "message": "x"},
                             meta={"queue": "q", "task": "t.work"})
    ex = await ops.explain("t-done")
    assert ex.state == "done" and "failed" in ex.summary and "KeyError: x" in ex.summary


async def test_status_queued_but_message_gone(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    task = await enqueue(ops)
    await broker.remove("q", [task])
    ex = await ops.explain(task)
    assert ex.state == "unknown" and codes(ex)[0] == "not-located" and "no-workers" in codes(ex)


async def test_found_without_a_status_by_searching_every_queue(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    env_ = Envelope(name="raw", queue="elsewhere")
    await broker.publish(env_)
    ex = await ops.explain(env_.id)
    assert ex.state == "queued" and ex.queue == "elsewhere" and ex.status is None


async def test_bad_id_is_a_value_error(env: tuple[Ops, Any, Any]) -> None:
    ops, _, _ = env
    with pytest.raises(ValueError):
        await ops.explain("")
    assert (await ops.explain("x" * 200)).state == "unknown"


async def test_explanation_is_json_ready(env: tuple[Ops, Any, Any]) -> None:
    import json

    ops, broker, backend = env
    task = await enqueue(ops)
    held = await claim(broker, ["q"], "w1", 1)
    await backend.set_heartbeat(heartbeat("w1", ["q"], inflight=[inflight_entry(held[0])]))
    data = (await ops.explain(task)).to_dict()
    assert json.loads(json.dumps(data))["lease"]["holder"] == "w1"
    assert data["lease"]["lease_expires_at"].endswith("Z")
    assert isinstance(data["blockers"][0], dict)


async def test_a_running_status_of_a_worker_that_stopped_heartbeating_says_so(env: tuple[Ops, Any, Any]) -> None:
    # Given a task the dead worker "vm-1" claimed and marked running, its heartbeat 60 s old
    ops, broker, backend = env
    task = await enqueue(ops)
    [held] = await claim(broker, ["q"], "vm-1", 1)
    await backend.set_status(task, TaskState.RUNNING, meta={"queue": "q", "worker": "vm-1"})
    await backend.set_heartbeat(heartbeat("vm-1", ["q"], age=60.0, inflight=[inflight_entry(held)]))
    # When it is explained while vm-1 still holds the lease
    ex = await ops.explain(task)
    # Then the status is not shown as live: the worker is gone and the task runs again later
    assert ex.status["state"] == "running"
    assert ex.status_note.startswith("running on vm-1, which stopped heartbeating 1m ago; will run again when its lease")
    assert codes(ex) == ["dead-holder"] and "runs again when its lease expires" in ex.blockers[0].message
    # And once the lease went back to the queue, it says the task was redelivered
    await broker.requeue("q", [task])
    ex = await ops.explain(task)
    assert ex.state == "queued" and "was running on vm-1" in ex.status_note and "redelivered" in ex.status_note


async def test_a_running_status_of_a_live_worker_has_no_note(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    task = await enqueue(ops)
    [held] = await claim(broker, ["q"], "vm-2", 1)
    await backend.set_status(task, TaskState.RUNNING, meta={"queue": "q", "worker": "vm-2"})
    await backend.set_heartbeat(heartbeat("vm-2", ["q"], inflight=[inflight_entry(held)]))
    ex = await ops.explain(task)
    assert ex.state == "running" and ex.status_note is None
