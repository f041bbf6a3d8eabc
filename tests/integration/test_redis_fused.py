"""Redis: ``Broker.enqueue`` and ``Broker.ack_with_status`` are one script call when the
result backend is on the broker's server and database, and fall back to the two steps
when it is not (another database, another adapter) or when a status moves to another
queue/task index (the fused scripts then do nothing). ``set_statuses`` is one script call,
and so are the ``set_status`` calls, and the ``ack_with_status`` calls, of one event-loop turn.

Real server, database 9 (the other-database backend uses 10). Round trips are counted
where every command of both adapters is written to a socket
(``StemConnection.send_packed_command``: one write per command or pipeline; connection
setup left out), script calls
at ``RedisConnection.evalsha``, the one place every Stem script goes through.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, TaskState, connect_backend, connect_broker
from stem_core.adapters.redis import backend as redis_backend
from stem_core.adapters.redis.connection import RedisConnection
from stem_core.adapters.redis.internals import StemConnection
from stem_core.errors import BackendUnavailable, BrokerUnavailable
from tests.contract.helpers import assert_nothing, receive_one, stats_of
from tests.integration.test_redis_connection import FreezingProxy
from tests.specs import require_service
from tests.specs.redis import REDIS_TEST_URL, delete_namespace
from tests.support import eventually

# The same server, another database: reachable, but not in the broker's scripts.
OTHER_DB_URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/10"
# What redis-py sends while (re)connecting or checking health: not work round trips (nor
# the SCRIPT LOAD / FUNCTION LOAD and repeated call after a NOSCRIPT / missing function).
CONNECTION_SETUP = {b"CLIENT", b"PING", b"SELECT", b"HELLO", b"AUTH"}


class Wire:
    """Round trips of work (commands written to Redis) and Stem scripts called, by name."""

    def __init__(self) -> None:
        self.trips = 0
        self.scripts: list[str] = []
        self.log: list[bytes] = []  # command names, for failure messages

    def reset(self) -> None:
        self.trips = 0
        self.scripts.clear()
        self.log.clear()


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    seen = Wire()
    send, evalsha = StemConnection.send_packed_command, RedisConnection.evalsha

    async def counted_send(self: Any, command: Any, check_health: bool = True) -> None:
        raw = bytes(command if isinstance(command, bytes) else b"".join(command))
        name = raw.split(b"\r\n")[2].upper()
        if name in (b"SCRIPT", b"FUNCTION"):  # another test flushed the shared server's scripts or functions
            seen.trips -= 1  # the reload replaces the call that failed, sent again after it
        elif name not in CONNECTION_SETUP:  # a connection dropped earlier (a cancelled read) reconnects first
            seen.trips += 1
        seen.log.append(name)
        await send(self, command, check_health)

    async def named(self: RedisConnection, name: str, nkeys: int, nargs: int, packed: bytes) -> Any:
        seen.scripts.append(name)
        return await evalsha(self, name, nkeys, nargs, packed)

    monkeypatch.setattr(StemConnection, "send_packed_command", counted_send)
    monkeypatch.setattr(redis_backend, "PRUNE_INTERVAL_S", float("inf"))  # no prune round trips in the counts
    monkeypatch.setattr(RedisConnection, "evalsha", named)
    return seen


@pytest.fixture
async def made() -> AsyncIterator[list[Any]]:
    """Brokers and backends to close, then their namespaces to drop (both databases)."""
    require_service("redis")
    opened: list[Any] = []
    yield opened
    namespaces = {item.namespace for item in opened}
    for item in opened:
        await item.close()
    for namespace in namespaces:
        for url in (REDIS_TEST_URL, OTHER_DB_URL):
            await delete_namespace(url, namespace)


async def open_pair(made: list[Any], backend_url: str = REDIS_TEST_URL) -> tuple[Any, Any]:
    namespace = "t" + uuid.uuid4().hex[:12]
    broker = await connect_broker(REDIS_TEST_URL, namespace=namespace)
    backend = await connect_backend(backend_url, namespace=namespace)
    made += (broker, backend)
    return broker, backend


def qname() -> str:
    return "q-" + uuid.uuid4().hex[:8]


async def stale_and_fresh(broker: Any, backend: Any, queue: str, name: str) -> tuple[Envelope, Any, Any]:
    """One task enqueued with a short lease, received twice: the first receipt is stale
    once the lease ended and the task was redelivered with a fresh one."""
    sent = Envelope(name=name, queue=queue, visibility_timeout=0.3)
    await broker.enqueue([sent], backend)
    stale = await receive_one(broker, queue)
    assert stale is not None
    fresh = await receive_one(broker, queue, timeout=10.0)  # redelivered once the short lease ended
    assert fresh is not None and fresh.envelope.id == sent.id
    return sent, stale, fresh


async def test_enqueue_is_one_script_call_when_the_backend_shares_the_database(made: list[Any], wire: Wire) -> None:
    broker, backend = await open_pair(made)
    queue = qname()
    first, many = Envelope(name="t.one", queue=queue), [Envelope(name="t.many", queue=queue) for _ in range(5)]
    await broker.enqueue([first], backend)  # registers the queue
    wire.reset()
    await broker.enqueue([Envelope(name="t.one", queue=queue)], backend)
    assert wire.trips == 1 and wire.scripts == ["enqueue_with"]
    wire.reset()
    await broker.enqueue(many, backend)
    assert wire.trips == 1 and wire.scripts == ["enqueue_with"]
    # Then every status is stored and every message is queued
    for env in (first, *many):
        status = await backend.get_status(env.id)
        assert status is not None and status.state == TaskState.QUEUED and status.meta["queue"] == queue
    assert (await stats_of(broker, queue)).pending == 7


async def test_ack_with_status_is_one_script_call_and_a_stale_receipt_acks_nothing(made: list[Any], wire: Wire) -> None:
    broker, backend = await open_pair(made)
    queue = qname()
    sent, stale, fresh = await stale_and_fresh(broker, backend, queue, "t.ack")
    wire.reset()
    await broker.ack_with_status(stale, backend, TaskState.SUCCEEDED, payload={"by": "stale"},
                                 meta={"queue": queue, "task": "t.ack"})
    assert wire.trips == 1 and wire.scripts == ["ack_with"], (wire.trips, wire.scripts, wire.log)
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == {"by": "stale"}
    assert (await stats_of(broker, queue)).inflight == 1  # the new holder still holds it
    await broker.ack_with_status(fresh, backend, TaskState.SUCCEEDED, payload={"by": "fresh"},
                                 meta={"queue": queue, "task": "t.ack"})
    stats = await stats_of(broker, queue)
    assert stats.inflight == 0 and stats.pending == 0
    status = await backend.get_status(sent.id)
    assert status is not None and status.payload == {"by": "fresh"}


async def test_a_backend_on_another_database_gets_the_two_steps(made: list[Any], wire: Wire) -> None:
    broker, backend = await open_pair(made, OTHER_DB_URL)
    queue = qname()
    sent = Envelope(name="t.other", queue=queue)
    await broker.enqueue([sent], backend)
    assert "enqueue_with" not in wire.scripts and "results_set" in wire.scripts
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.QUEUED
    delivery = await receive_one(broker, queue)
    assert delivery is not None and delivery.envelope.id == sent.id
    wire.reset()
    await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload=1, meta={"queue": queue, "task": "t.other"})
    assert wire.scripts == ["results_set", "ack"]
    status = await backend.get_status(sent.id)
    assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == 1
    assert (await stats_of(broker, queue)).inflight == 0


async def test_a_status_moving_to_another_queue_index_falls_back_and_is_indexed_once(made: list[Any], wire: Wire) -> None:
    broker, backend = await open_pair(made)
    old_queue, queue = qname(), qname()
    sent = Envelope(name="t.move", queue=queue)
    # The id already has a status indexed under another queue and task (a reused task id)
    await backend.set_status(sent.id, TaskState.FAILED, meta={"queue": old_queue, "task": "t.old"})
    wire.reset()
    await broker.enqueue([sent], backend)
    # The fused script did nothing, then the two steps ran (results_set asked again with the old keys)
    assert wire.scripts[0] == "enqueue_with" and "results_set" in wire.scripts
    assert [s.id for s in await backend.list_statuses(queue=queue)] == [sent.id]
    assert await backend.list_statuses(queue=old_queue) == []
    assert await backend.list_statuses(task="t.old") == []
    assert await backend.list_statuses(state=TaskState.FAILED) == []
    # And the message went out exactly once
    delivery = await receive_one(broker, queue)
    assert delivery is not None and delivery.envelope.id == sent.id
    await assert_nothing(broker, queue)
    # Settling under yet another queue label falls back the same way, and acks
    wire.reset()
    await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, meta={"queue": "elsewhere", "task": "t.move"})
    assert wire.scripts[0] == "ack_with" and wire.scripts[-1] == "ack"
    assert await backend.list_statuses(queue=queue) == []
    assert [s.id for s in await backend.list_statuses(queue="elsewhere")] == [sent.id]
    assert (await stats_of(broker, queue)).inflight == 0


async def test_set_statuses_is_one_script_call_and_falls_back_when_one_moves(made: list[Any], wire: Wire) -> None:
    _, backend = await open_pair(made)
    ids = [f"s{k}" for k in range(50)]
    wire.reset()
    await backend.set_statuses([(i, TaskState.QUEUED, {"queue": "a", "task": "x"}) for i in ids])
    assert wire.scripts == ["results_set_many"]
    assert {s.id for s in await backend.list_statuses(queue="a", limit=100)} == set(ids)
    # One of them moves to queue b, and one id appears twice: written one by one, in order
    wire.reset()
    await backend.set_statuses([("s1", TaskState.RUNNING, {"queue": "b"}), ("new", TaskState.QUEUED, {"queue": "a"}),
                                ("new", TaskState.QUEUED, {"queue": "c"})])
    assert wire.scripts[0] == "results_set_many" and wire.scripts[1:].count("results_set") >= 3
    assert [s.id for s in await backend.list_statuses(queue="b")] == ["s1"]
    assert [s.id for s in await backend.list_statuses(queue="c")] == ["new"]
    assert "s1" not in {s.id for s in await backend.list_statuses(queue="a", limit=100)}
    assert "new" not in {s.id for s in await backend.list_statuses(queue="a", limit=100)}
    status = await backend.get_status("s1")
    assert status is not None and status.state == TaskState.RUNNING and status.meta == {"queue": "b"}


# -- per event-loop turn: status writes and settles of one turn are one script call ---------


async def test_status_writes_of_one_turn_are_one_script_call_and_a_lone_write_is_one(made: list[Any], wire: Wire) -> None:
    _, backend = await open_pair(made)
    first = await backend.set_status("a", TaskState.QUEUED, meta={"queue": "q", "task": "t"})
    wire.reset()
    # A lone write: results_set, one call
    lone = await backend.set_status("b", TaskState.QUEUED, meta={"queue": "q", "task": "t"})
    assert wire.trips == 1 and wire.scripts == ["results_set"], (wire.scripts, wire.log)
    wire.reset()
    # Two writes made in one turn (a worker's claimed batch starting): one call
    a, b = await asyncio.gather(
        backend.set_status("a", TaskState.RUNNING, attempt=1, meta={"queue": "q", "task": "t", "n": 1}),
        backend.set_status("b", TaskState.RUNNING, payload=[1], meta={"queue": "q", "task": "t"}),
    )
    assert wire.trips == 1 and wire.scripts == ["results_set_many"], (wire.scripts, wire.log)
    # Each caller gets what was stored: its own fields, created_at kept, one updated_at
    assert (a.id, a.state, a.attempt, a.meta, a.created_at) == ("a", TaskState.RUNNING, 1, {"queue": "q", "task": "t", "n": 1},
                                                                 first.created_at)
    assert (b.id, b.payload, b.created_at) == ("b", [1], lone.created_at)
    assert a.updated_at == b.updated_at and a.updated_at > lone.updated_at
    for status in (a, b):
        stored = await backend.get_status(status.id)
        assert stored is not None and stored.to_dict() == status.to_dict()
    assert {s.id for s in await backend.list_statuses(state=TaskState.RUNNING)} == {"a", "b"}
    assert await backend.list_statuses(state=TaskState.QUEUED) == []


async def test_a_turn_repeating_a_task_id_writes_in_call_order(made: list[Any], wire: Wire) -> None:
    _, backend = await open_pair(made)
    namespace = backend.namespace
    watcher = await connect_backend(REDIS_TEST_URL, namespace=namespace)  # another connection
    made.append(watcher)
    await backend.set_status("x", TaskState.QUEUED, meta={"queue": "q"})
    seen: list[TaskState] = []

    async def watch() -> None:
        async for status in watcher.watch("x"):
            seen.append(status.state)
            if status.state.is_terminal:
                return

    watching = asyncio.ensure_future(watch())
    await eventually(lambda: seen)
    wire.reset()
    running, done, other = await asyncio.gather(
        backend.set_status("x", TaskState.RUNNING, meta={"queue": "q"}),
        backend.set_status("x", TaskState.SUCCEEDED, payload="ok", meta={"queue": "q"}),
        backend.set_status("y", TaskState.RUNNING, meta={"queue": "q"}),
    )
    # One call: the script writes its records in call order, so the id needs no split
    assert wire.scripts == ["results_set_many"]
    await asyncio.wait_for(watching, 5)
    assert seen == [TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED]
    stored = await backend.get_status("x")
    assert stored is not None and stored.state == TaskState.SUCCEEDED and stored.payload == "ok"
    assert running.created_at == done.created_at == stored.created_at and other.state == TaskState.RUNNING
    assert [s.id for s in await backend.list_statuses(state=TaskState.RUNNING)] == ["y"]
    assert [s.id for s in await backend.list_statuses(state=TaskState.SUCCEEDED)] == ["x"]


async def test_a_turn_whose_status_moves_index_falls_back_to_one_by_one(made: list[Any], wire: Wire) -> None:
    _, backend = await open_pair(made)
    await backend.set_status("m", TaskState.QUEUED, meta={"queue": "old"})
    wire.reset()
    moved, kept = await asyncio.gather(
        backend.set_status("m", TaskState.RUNNING, meta={"queue": "new"}),
        backend.set_status("k", TaskState.RUNNING, meta={"queue": "new"}),
    )
    # The batch did nothing, then each write went alone (m asking again with the old keys)
    assert wire.scripts[0] == "results_set_many" and wire.scripts[1:] == ["results_set", "results_set", "results_set"]
    assert (moved.state, kept.state) == (TaskState.RUNNING, TaskState.RUNNING)
    assert {s.id for s in await backend.list_statuses(queue="new")} == {"m", "k"}
    assert await backend.list_statuses(queue="old") == []


async def test_settles_of_one_turn_are_one_script_call_with_a_stale_receipt_inside(made: list[Any], wire: Wire) -> None:
    broker, backend = await open_pair(made)
    queue = qname()
    short, stale, fresh = await stale_and_fresh(broker, backend, queue, "t.s")
    others = [Envelope(name="t.s", queue=queue) for _ in range(2)]
    await broker.enqueue(others, backend)
    held = [await receive_one(broker, queue) for _ in others]
    assert all(d is not None for d in held)
    wire.reset()
    await asyncio.gather(
        broker.ack_with_status(held[0], backend, TaskState.SUCCEEDED, payload=0, meta={"queue": queue, "task": "t.s"}),
        broker.ack_with_status(stale, backend, TaskState.CANCELLED, meta={"queue": queue, "task": "t.s"}),
        broker.ack_with_status(held[1], backend, TaskState.SUCCEEDED, payload=1, meta={"queue": queue, "task": "t.s"}),
    )
    assert wire.trips == 1 and wire.scripts == ["ack_with"], (wire.scripts, wire.log)
    # Every status is stored; the stale receipt acked nothing: the new holder keeps it
    for k, d in enumerate(held):
        status = await backend.get_status(d.envelope.id)  # type: ignore[union-attr]
        assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == k
    status = await backend.get_status(short.id)
    assert status is not None and status.state == TaskState.CANCELLED
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.inflight) == (0, 1)
    wire.reset()
    await broker.ack_with_status(fresh, backend, TaskState.SUCCEEDED, payload="fresh", meta={"queue": queue, "task": "t.s"})
    assert wire.scripts == ["ack_with"]  # a lone settle: one call
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.inflight) == (0, 0)
    status = await backend.get_status(short.id)
    assert status is not None and status.payload == "fresh" and status.created_at is not None


async def test_a_settle_turn_whose_status_moves_index_takes_the_two_steps(made: list[Any], wire: Wire) -> None:
    broker, backend = await open_pair(made)
    queue = qname()
    sent = [Envelope(name="t.m", queue=queue) for _ in range(2)]
    await broker.enqueue(sent, backend)
    held = [await receive_one(broker, queue) for _ in sent]
    wire.reset()
    await asyncio.gather(
        broker.ack_with_status(held[0], backend, TaskState.SUCCEEDED, meta={"queue": "elsewhere", "task": "t.m"}),  # type: ignore[arg-type]
        broker.ack_with_status(held[1], backend, TaskState.SUCCEEDED, meta={"queue": queue, "task": "t.m"}),  # type: ignore[arg-type]
    )
    assert wire.scripts[0] == "ack_with" and wire.scripts.count("ack") == 2, wire.scripts
    assert [s.id for s in await backend.list_statuses(queue="elsewhere")] == [sent[0].id]
    assert [s.id for s in await backend.list_statuses(queue=queue)] == [sent[1].id]
    stats = await stats_of(broker, queue)
    assert (stats.pending, stats.inflight, stats.completed_total) == (0, 0, 2)


async def test_a_failed_turn_raises_in_every_caller_and_does_nothing(namespace: str, wire: Wire) -> None:
    require_service("redis")
    proxy = await FreezingProxy().start()
    url = f"redis://127.0.0.1:{proxy.port}/9?socket_timeout=0.5&retry_attempts=0"
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    try:
        queue = qname()
        await broker.enqueue([Envelope(name="t.f", queue=queue) for _ in range(2)], backend)
        held = [await receive_one(broker, queue) for _ in range(2)]
        wire.reset()
        proxy.frozen = True
        settles = await asyncio.wait_for(asyncio.gather(
            *(broker.ack_with_status(d, backend, TaskState.SUCCEEDED, meta={"queue": queue, "task": "t.f"}) for d in held),  # type: ignore[arg-type]
            return_exceptions=True,
        ), 10)
        assert all(isinstance(r, BrokerUnavailable) for r in settles), settles
        writes = await asyncio.wait_for(asyncio.gather(
            *(backend.set_status(d.envelope.id, TaskState.RUNNING) for d in held),  # type: ignore[union-attr]
            return_exceptions=True,
        ), 10)
        assert wire.scripts == ["ack_with", "results_set_many"]  # one call each, failed
        assert all(isinstance(r, BackendUnavailable) for r in writes), writes
        proxy.frozen = False
        # Nothing was written or acked
        for d in held:
            status = await backend.get_status(d.envelope.id)  # type: ignore[union-attr]
            assert status is not None and status.state == TaskState.QUEUED
        stats = await stats_of(broker, queue)
        assert (stats.pending, stats.inflight) == (0, 2)
    finally:
        await broker.close()
        await backend.close()
        await proxy.stop()
        await delete_namespace(REDIS_TEST_URL, namespace)


async def test_close_waits_for_the_writes_and_settles_of_its_turn(made: list[Any]) -> None:
    broker, backend = await open_pair(made)
    queue = qname()
    sent = Envelope(name="t.c", queue=queue)
    await broker.enqueue([sent], backend)
    delivery = await receive_one(broker, queue)
    assert delivery is not None
    settle = asyncio.ensure_future(broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload=2,
                                                         meta={"queue": queue, "task": "t.c"}))
    write = asyncio.ensure_future(backend.set_status("c2", TaskState.QUEUED))
    await asyncio.sleep(0)  # both made their call in this turn
    await broker.close()
    await backend.close()
    await settle
    assert (await write).state == TaskState.QUEUED
    reader = await connect_backend(REDIS_TEST_URL, namespace=backend.namespace)
    made.append(reader)
    status = await reader.get_status(sent.id)
    assert status is not None and status.payload == 2
    assert await reader.get_status("c2") is not None
