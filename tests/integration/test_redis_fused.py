"""Redis: ``Broker.enqueue`` and ``Broker.ack_with_status`` are one script call when the
result backend is on the broker's server and database, and fall back to the two steps
when it is not (another database, another adapter) or when a status moves to another
queue/task index (the fused scripts then do nothing). ``set_statuses`` is one script call.

Real server, database 9 (the other-database backend uses 10). Round trips are counted
where every command of both adapters is written to a socket
(``StemConnection.send_packed_command``: one write per command or pipeline; connection
setup left out), script calls
at ``Connection.evalsha``, the one place every Stem script goes through.
"""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, TaskState, connect_backend, connect_broker
from stem_core.adapters.redis import results as redis_results
from stem_core.adapters.redis.connection import Connection, StemConnection
from tests.contract.helpers import assert_nothing, receive_one, stats_of
from tests.specs import require_service
from tests.specs.redis import REDIS_TEST_URL, delete_namespace

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
    send, evalsha = StemConnection.send_packed_command, Connection.evalsha

    async def counted_send(self: Any, command: Any, check_health: bool = True) -> None:
        raw = bytes(command if isinstance(command, bytes) else b"".join(command))
        name = raw.split(b"\r\n")[2].upper()
        if name in (b"SCRIPT", b"FUNCTION"):  # another test flushed the shared server's scripts or functions
            seen.trips -= 1  # the reload replaces the call that failed, sent again after it
        elif name not in CONNECTION_SETUP:  # a connection dropped earlier (a cancelled read) reconnects first
            seen.trips += 1
        seen.log.append(name)
        await send(self, command, check_health)

    async def named(self: Connection, name: str, nkeys: int, nargs: int, packed: bytes) -> Any:
        seen.scripts.append(name)
        return await evalsha(self, name, nkeys, nargs, packed)

    monkeypatch.setattr(StemConnection, "send_packed_command", counted_send)
    monkeypatch.setattr(redis_results, "PRUNE_INTERVAL_S", float("inf"))  # no prune round trips in the counts
    monkeypatch.setattr(Connection, "evalsha", named)
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
    sent = Envelope(name="t.ack", queue=queue, visibility_timeout=0.3)
    await broker.enqueue([sent], backend)
    stale = await receive_one(broker, queue)
    assert stale is not None
    fresh = await receive_one(broker, queue, timeout=10.0)  # redelivered once the short lease ended
    assert fresh is not None and fresh.envelope.id == sent.id
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
