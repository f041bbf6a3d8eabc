"""Several processes on one SQLite file: claims never deliver a message twice, an idle
consumer is woken by another process's commit (without running claims while idle),
``watch`` sees every state written by another process, and a forked child reopens its
own connections instead of using the parent's."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from stem_core import Envelope, TaskState
from stem_core.adapters.sqlite import SQLiteBroker, jobs
from tests.support import eventually

from .sqlite_helpers import SQLiteOpener

DEADLINE_S = 30.0
MESSAGES = 1500
CONSUMERS = 2

# A consumer process: says "ready" once connected, waits for the start file, then takes
# messages from "work" (acking each) until a message arrives on its own stop queue, and
# prints one JSON line: [[id, delivery_count], ...].
CONSUMER = """
import asyncio, json, os, sys, time
from stem_core import connect_broker
url, ns, stop_queue, go = sys.argv[1:5]
async def main():
    broker = await connect_broker(url, namespace=ns)
    print("ready", flush=True)
    while not os.path.exists(go):
        await asyncio.sleep(0.001)
    seen = []
    deliveries = broker.consume(["work", stop_queue], prefetch=5)
    async for delivery in deliveries:
        await broker.ack(delivery)
        if delivery.queue == stop_queue:
            break
        seen.append([delivery.envelope.id, delivery.delivery_count])
    await deliveries.aclose()
    await broker.close()
    print(json.dumps(seen), flush=True)
asyncio.run(main())
"""

# A producer process: publishes one envelope (given as JSON) and exits.
PRODUCER = """
import asyncio, sys
from stem_core import Envelope, connect_broker
async def main(url, ns, text):
    broker = await connect_broker(url, namespace=ns)
    await broker.publish(Envelope.from_json(text))
    await broker.close()
asyncio.run(main(*sys.argv[1:4]))
"""

# A status writer process: waits for the start file, then writes the given states in order.
WRITER = """
import asyncio, os, sys
from stem_core import connect_backend
url, ns, task_id, go, *states = sys.argv[1:]
async def main():
    backend = await connect_backend(url, namespace=ns)
    while not os.path.exists(go):
        await asyncio.sleep(0.001)
    for attempt, state in enumerate(states):
        await backend.set_status(task_id, state, attempt=attempt)
    await backend.close()
asyncio.run(main())
"""


async def spawn(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), DEADLINE_S)).decode().strip()


@pytest.mark.slow
async def test_two_processes_claiming_one_file_never_share_a_message(
    open_sqlite: SQLiteOpener, sqlite_url: str, tmp_path: Path, namespace: str
) -> None:
    # Given many messages and two consumer processes released at the same moment
    broker = await open_sqlite.broker()
    sent = [Envelope(name="work.item", queue="work", args={"n": n}) for n in range(MESSAGES)]
    for start in range(0, MESSAGES, 100):
        await broker.publish_many(sent[start : start + 100])
    go = tmp_path / "go"
    peers = [await spawn(CONSUMER, sqlite_url, namespace, f"stop-{i}", str(go)) for i in range(CONSUMERS)]
    try:
        for peer in peers:
            assert await read_line(peer) == "ready"
        go.touch()
        # When they have drained the queue between them
        async def drained() -> bool:
            [stats] = await broker.queue_stats(["work"])
            return stats.completed_total == MESSAGES
        await eventually(drained, timeout=DEADLINE_S, message="the queue to drain")
        for index in range(CONSUMERS):
            await broker.publish(Envelope(name="stop", queue=f"stop-{index}"))
        outputs = [json.loads(await read_line(peer)) for peer in peers]
        for peer in peers:
            assert await asyncio.wait_for(peer.wait(), DEADLINE_S) == 0
    finally:
        for peer in peers:
            if peer.returncode is None:
                peer.kill()
                await peer.wait()
    # Then every message was delivered exactly once, to one of them, on its first delivery
    ids = [item[0] for output in outputs for item in output]
    assert sorted(ids) == sorted(env.id for env in sent)
    assert len(set(ids)) == len(ids)
    assert {item[1] for output in outputs for item in output} == {1}
    [stats] = await broker.queue_stats(["work"])
    assert (stats.pending, stats.inflight, stats.delayed) == (0, 0, 0)


async def test_an_idle_consumer_runs_no_claims_and_wakes_on_another_process_commit(
    open_sqlite: SQLiteOpener, sqlite_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an idle consumer, with its claim transactions counted
    claims = 0
    real_step = jobs.receive_step

    def counting_step(conn: Any, request: jobs.StepRequest) -> jobs.StepResult:
        nonlocal claims
        claims += request.limit > 0
        return real_step(conn, request)

    monkeypatch.setattr(jobs, "receive_step", counting_step)
    broker = await open_sqlite.broker()
    deliveries = broker.consume(["work"])
    receiver = asyncio.create_task(anext(deliveries))  # type: ignore[arg-type]
    await eventually(lambda: claims >= 1, timeout=DEADLINE_S, message="the first claim")
    # When nothing is committed for a while, Then it only probes data_version: no more claims
    await asyncio.sleep(0.3)
    assert claims <= 2
    assert not receiver.done()
    # When another process publishes, Then the idle consumer gets the message
    sent = Envelope(name="cross.process", queue="work")
    producer = await spawn(PRODUCER, sqlite_url, namespace, sent.to_json())
    assert await asyncio.wait_for(producer.wait(), DEADLINE_S) == 0
    delivery = await asyncio.wait_for(receiver, DEADLINE_S)
    assert delivery.envelope.id == sent.id
    await broker.ack(delivery)
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_watch_sees_every_state_written_by_another_process(
    open_sqlite: SQLiteOpener, sqlite_url: str, tmp_path: Path, namespace: str
) -> None:
    # Given a watcher in this process and a writer process held at the start line
    backend = await open_sqlite.backend()
    await backend.set_status("task-1", TaskState.QUEUED)
    go = tmp_path / "go"
    states = ["running", "retried", "running", "succeeded"]
    writer = await spawn(WRITER, sqlite_url, namespace, "task-1", str(go), *states)
    watch = backend.watch("task-1")
    try:
        assert (await asyncio.wait_for(anext(watch), DEADLINE_S)).state is TaskState.QUEUED  # type: ignore[arg-type]
        # When the writer writes its states back to back
        go.touch()
        # Then the watcher sees each of them, in order, none skipped
        seen = [(await asyncio.wait_for(anext(watch), DEADLINE_S)) for _ in states]  # type: ignore[arg-type]
        assert [s.state.value for s in seen] == states
        assert [s.attempt for s in seen] == list(range(len(states)))
        assert await asyncio.wait_for(writer.wait(), DEADLINE_S) == 0
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
        if writer.returncode is None:
            writer.kill()
            await writer.wait()


def test_a_forked_child_opens_its_own_connections(sqlite_url: str, namespace: str) -> None:
    # Given a broker that has been used in this process (its connections are open)
    broker = SQLiteBroker.from_url(sqlite_url, namespace=namespace)

    async def use() -> None:
        await broker.connect()
        await broker.publish(Envelope(name="parent", queue="work"))

    asyncio.run(use())
    # When a forked child keeps using the same broker object
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            async def child() -> None:
                await broker.publish(Envelope(name="child", queue="work"))
                [stats] = await broker.queue_stats(["work"])
                assert stats.pending == 2
            asyncio.run(child())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    # Then the child worked (on its own connections) and the parent's still work too
    assert os.waitstatus_to_exitcode(status) == 0

    async def check() -> int:
        [stats] = await broker.queue_stats(["work"])
        await broker.close()
        return stats.pending

    assert asyncio.run(check()) == 2
