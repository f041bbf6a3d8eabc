"""PostgreSQL result backend: statuses, TTLs and cleanup, cross-process watch, heartbeats,
records and audit, and the index behind ``list_statuses``. Real server, one schema per test."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Awaitable, Callable

import psycopg
import pytest

from stem_core import TaskState, TaskStatus, WorkerHeartbeat
from stem_core.adapters.postgres import PostgresBackend
from stem_core.adapters.postgres.connection import PostgresDatabase, quote_ident, schema_name
from stem_core.clock import utcnow
from stem_core.errors import BackendUnavailable
from tests.specs import AdapterSpec, require_service
from tests.specs.postgres import SPEC, URL
from tests.support import eventually

BackendFactory = Callable[..., Awaitable[PostgresBackend]]
DEADLINE_S = 10.0


@pytest.fixture
def backend_spec() -> AdapterSpec:
    """PostgreSQL only: ``backend_factory`` (tests/conftest.py) opens backends on the test's
    namespace, closes them and removes the namespace afterwards."""
    require_service("postgres")
    return SPEC


async def test_set_status_overwrites_and_keeps_created_at(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    first = await backend.set_status("t1", "failed", error={"type": "E", "message": "m"}, meta={"queue": "q"})
    second = await backend.set_status("t1", TaskState.SUCCEEDED, payload={"ok": [1, 2]}, attempt=2)
    got = await backend.get_status("t1")
    assert got is not None and got.state is TaskState.SUCCEEDED and got.error is None
    assert got.payload == {"ok": [1, 2]} and got.attempt == 2 and got.meta == {}
    assert got.created_at == first.created_at == second.created_at
    assert got.updated_at == second.updated_at
    assert await backend.get_status("missing") is None


async def test_ttl_expiry_and_cleanup(backend_factory: BackendFactory, namespace: str) -> None:
    backend = await backend_factory()
    await backend.set_status("short", "succeeded", ttl=0.2)
    await backend.set_status("long", "succeeded")
    await backend.set_status("renewed", "succeeded", ttl=0.2)
    await backend.expire("renewed", 60)
    await eventually(lambda: backend.get_status("short"), equals=None, timeout=DEADLINE_S)
    assert await backend.get_status("renewed") is not None
    assert await backend.cleanup() == 1
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        cur = await conn.execute(f"SELECT task_id FROM {quote_ident(schema_name(namespace))}.statuses ORDER BY 1")
        assert [r[0] for r in await cur.fetchall()] == ["long", "renewed"]


async def test_list_statuses_filters_newest_first(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    for i in range(6):
        await backend.set_status(f"id{i}", "succeeded" if i % 2 else "failed",
                                 meta={"queue": f"q{i % 3}", "task": "a" if i < 3 else "b"})
    assert [s.id for s in await backend.list_statuses()] == ["id5", "id4", "id3", "id2", "id1", "id0"]
    assert [s.id for s in await backend.list_statuses(state="failed")] == ["id4", "id2", "id0"]
    assert [s.id for s in await backend.list_statuses(queue="q1")] == ["id4", "id1"]
    assert [s.id for s in await backend.list_statuses(task="a", state="succeeded")] == ["id1"]
    assert [s.id for s in await backend.list_statuses(limit=2, offset=1)] == ["id4", "id3"]


async def test_list_statuses_is_served_by_an_index(backend_factory: BackendFactory, namespace: str) -> None:
    backend = await backend_factory()
    schema = quote_ident(schema_name(namespace))
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        # A realistic table size, so the planner's choice is the one production gets
        await conn.execute(
            f"INSERT INTO {schema}.statuses (task_id, state, meta, created_at, updated_at, expires_at) "
            "SELECT 'x' || g, 'succeeded', jsonb_build_object('queue', 'q' || (g % 50), 'task', 't' || (g % 20)), "
            "now(), now() - g * interval '1 ms', now() + interval '1 day' FROM generate_series(1, 20000) g"
        )
        await conn.execute(f"ANALYZE {schema}.statuses")
        for present in [(False, False, False), (True, False, False), (False, True, False), (False, False, True)]:
            query = backend._list_query(present)
            params = {"state": "succeeded", "queue": "q3", "task": "t4", "limit": 50, "offset": 0}
            cur = await conn.execute("EXPLAIN " + query, params)
            plan = "\n".join(r[0] for r in await cur.fetchall())
            assert "Index" in plan and "Seq Scan" not in plan, plan


async def test_watch_sees_updates_from_another_process_in_order(backend_factory: BackendFactory) -> None:
    watcher_side, writer_side = await backend_factory(), await backend_factory()
    await writer_side.set_status("w1", "queued")
    seen: list[str] = []

    async def watch() -> None:
        async for status in watcher_side.watch("w1"):
            seen.append(status.state.value)
            if status.state.is_terminal:
                return

    task = asyncio.ensure_future(watch())
    await eventually(lambda: len(seen), equals=1, timeout=DEADLINE_S)
    # Rapid updates from another backend (its own connections): none may be skipped
    for state in ("running", "retried", "running", "succeeded"):
        await writer_side.set_status("w1", state)
    await asyncio.wait_for(task, DEADLINE_S)
    assert seen == ["queued", "running", "retried", "running", "succeeded"]


async def test_watch_rereads_statuses_too_large_for_notify(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    big = "x" * 20_000
    await backend.set_status("big", "queued")
    it = backend.watch("big").__aiter__()
    current = await asyncio.wait_for(it.__anext__(), DEADLINE_S)  # read once LISTEN is in place
    assert current.state is TaskState.QUEUED
    waiting = asyncio.ensure_future(it.__anext__())
    await backend.set_status("big", "succeeded", payload=big)
    status = await asyncio.wait_for(waiting, DEADLINE_S)
    assert status.payload == big
    await it.aclose()


async def test_closing_ends_a_watch(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await backend.set_status("open", "queued")
    seen: list[TaskStatus] = []

    async def watch() -> None:
        async for status in backend.watch("open"):
            seen.append(status)

    waiting = asyncio.ensure_future(watch())
    await eventually(lambda: seen, timeout=DEADLINE_S)  # read once LISTEN is in place; now waiting
    await backend.close()
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(waiting, DEADLINE_S)


def _heartbeat(worker_id: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=worker_id, namespace="t", host=socket.gethostname(), pid=os.getpid(),
                           queues=["default"], concurrency=2, inflight=[], processed=3, failed=0, retried=1,
                           paused_queues=[], version="0.1.0", timestamp=utcnow())


async def test_heartbeats_expire(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await backend.set_heartbeat(_heartbeat("w-b"))
    await backend.set_heartbeat(_heartbeat("w-a"))
    await backend.set_heartbeat(_heartbeat("w-gone"), ttl=0.2)
    assert (await backend.get_heartbeat("w-a")).processed == 3
    await eventually(lambda: backend.get_heartbeat("w-gone"), equals=None, timeout=DEADLINE_S)
    assert [hb.worker_id for hb in await backend.list_heartbeats()] == ["w-a", "w-b"]


async def test_records_and_audit(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await backend.put_record("paused", "emails", {"reason": "maintenance"})
    await backend.put_record("paused", "temp", {"reason": "x"}, ttl=0.2)
    await backend.put_record("revoked", "t1", {"terminate": True})
    assert await backend.get_record("paused", "emails") == {"reason": "maintenance"}
    await eventually(lambda: backend.get_record("paused", "temp"), equals=None, timeout=DEADLINE_S)
    assert await backend.list_records("paused") == {"emails": {"reason": "maintenance"}}
    assert await backend.delete_record("paused", "emails") is True
    assert await backend.delete_record("paused", "emails") is False
    for i in range(3):
        await backend.append_audit({"n": i})
    assert await backend.list_audit(limit=2) == [{"n": 2}, {"n": 1}]
    assert await backend.list_audit(limit=5, offset=2) == [{"n": 0}]


async def test_bad_values_are_rejected(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    with pytest.raises(ValueError):
        await backend.set_status("t", "succeeded", payload=float("nan"))
    with pytest.raises(ValueError):
        await backend.set_status("t", "nope")


async def test_set_statuses_writes_a_batch_in_one_statement(backend_factory: BackendFactory) -> None:
    backend = await backend_factory()
    await backend.set_status("b1", "failed", error={"type": "E", "message": "m"})
    await backend.set_statuses([("b1", "queued", {"queue": "q"}), ("b2", "queued", None), ("b2", "queued", {"task": "t"})])
    b1, b2 = await backend.get_status("b1"), await backend.get_status("b2")
    assert b1.state is TaskState.QUEUED and b1.error is None and b1.meta == {"queue": "q"}
    assert b2.meta == {"task": "t"} and b2.payload is None and b2.attempt == 0
    assert [s.id for s in await backend.list_statuses(state="queued", queue="q")] == ["b1"]


async def test_status_writes_of_one_turn_go_out_as_one_statement(
    backend_factory: BackendFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given writes started in the same event-loop turn (a worker's claimed batch starting)
    backend = await backend_factory()
    first = await backend.set_status("c1", "queued", meta={"queue": "q"})
    statements: list[str] = []
    real = PostgresDatabase.fetch

    async def counted(self: PostgresDatabase, query: str, params: object = None) -> list[tuple]:
        statements.append(query)
        return await real(self, query, params)

    monkeypatch.setattr(PostgresDatabase, "fetch", counted)
    writes = [
        backend.set_status("c1", "running", attempt=1, meta={"worker": "w"}),
        backend.set_status("c2", "running", meta={"worker": "w"}),
        backend.set_status("c3", "succeeded", payload=[3]),
    ]
    c1, c2, c3 = await asyncio.gather(*writes)
    # Then they cost one statement, and each caller gets its own stored status
    assert len(statements) == 1
    assert (c1.state, c1.attempt, c1.created_at) == (TaskState.RUNNING, 1, first.created_at)
    assert c2.state is TaskState.RUNNING and c3.payload == [3]
    for got, wanted in zip([await backend.get_status(i) for i in ("c1", "c2", "c3")], (c1, c2, c3)):
        assert got is not None and got.to_dict() == wanted.to_dict()


async def test_a_task_written_twice_in_one_turn_keeps_the_later_write(
    backend_factory: BackendFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = await backend_factory()
    early, late = await asyncio.gather(
        backend.set_status("d1", "running", meta={"progress": 1}),
        backend.set_status("d1", "running", meta={"progress": 2}),
    )
    got = await backend.get_status("d1")
    assert got is not None and got.meta == {"progress": 2} and got.updated_at == late.updated_at
    assert early.created_at == late.created_at


async def test_every_write_of_a_failed_batch_raises(backend_factory: BackendFactory, namespace: str) -> None:
    backend = await backend_factory()
    await backend.set_status("e0", "queued")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(f"DROP TABLE {quote_ident(schema_name(namespace))}.statuses CASCADE")
    results = await asyncio.gather(backend.set_status("e1", "running"), backend.set_status("e2", "running"),
                                   return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results), results
