"""Result-backend contract (ports of the original suite's cases 1-5 and 10-12; groups,
chords and encoders are not part of Stem), plus list_statuses, records and the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import AsyncIterator, Awaitable, Callable

import pytest

from stem_core import ResultBackend, TaskState, TaskStatus, WorkerHeartbeat
from stem_core.clock import utcnow
from tests.support import eventually

from .helpers import DELIVERY_DEADLINE_S

SHORT_TTL_S = 1.0


def tid(prefix: str = "task") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def heartbeat(worker_id: str, **fields: object) -> WorkerHeartbeat:
    values: dict[str, object] = dict(
        worker_id=worker_id, namespace="contract", host="host-1", pid=4242, queues=["default"], concurrency=1,
        inflight=[], processed=0, failed=0, retried=0, paused_queues=[], version="1", timestamp=utcnow(),
    )
    values.update(fields)
    return WorkerHeartbeat(**values)  # type: ignore[arg-type]


class Watch:
    """A ``watch`` pumped into a queue, so a test can wait for the next status with a deadline."""

    def __init__(self, backend: ResultBackend, task_id: str) -> None:
        self.iterator = backend.watch(task_id)
        self.inbox: asyncio.Queue[TaskStatus] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for status in self.iterator:
            await self.inbox.put(status)

    async def next(self, timeout: float = DELIVERY_DEADLINE_S) -> TaskStatus:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.iterator.aclose()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def watching(backend: ResultBackend, task_id: str) -> AsyncIterator[Watch]:
    watch = Watch(backend, task_id)
    try:
        yield watch
    finally:
        await watch.close()


async def test_set_get_and_watch_a_status(backend: ResultBackend) -> None:
    # Given a watcher that already saw the task's current status (so it is subscribed)
    task_id = tid()
    await backend.set_status(task_id, TaskState.QUEUED)
    async with watching(backend, task_id) as watch:
        assert (await watch.next()).state is TaskState.QUEUED
        # When the status is written
        error = {"type": "ContractError", "message": "boom", "retryable": True, "meta": {"code": 42}}
        stored = await backend.set_status(
            task_id, "succeeded", payload={"value": "done"}, error=error, attempt=3, meta={"origin": "contract"}
        )
        # Then get and the watcher both see it
        seen = await watch.next()
    got = await backend.get_status(task_id)
    for status in (stored, got, seen):
        assert status is not None
        assert (status.id, status.state, status.payload, status.attempt) == (task_id, TaskState.SUCCEEDED, {"value": "done"}, 3)
        assert status.meta == {"origin": "contract"}
        assert status.error is not None
        assert (status.error["type"], status.error["message"], status.error["retryable"]) == ("ContractError", "boom", True)
        assert status.error["meta"] == {"code": 42} and status.error["traceback"] is None
        assert status.created_at is not None and status.updated_at is not None


async def test_unknown_status_is_none(backend: ResultBackend) -> None:
    assert await backend.get_status(tid("missing")) is None
    await backend.expire(tid("missing"), 5)  # nothing to expire is not an error


async def test_overwrite_clears_the_error_and_keeps_created_at(backend: ResultBackend) -> None:
    task_id = tid()
    first = await backend.set_status(
        task_id, TaskState.FAILED, payload={"value": "bad"}, error={"type": "E", "message": "m"}, attempt=1,
        meta={"phase": "failed"},
    )
    got = await backend.get_status(task_id)
    assert got is not None and got.state is TaskState.FAILED and got.error is not None and got.meta["phase"] == "failed"
    second = await backend.set_status(task_id, TaskState.SUCCEEDED, payload={"value": "ok"}, attempt=2, meta={"phase": "success"})
    got = await backend.get_status(task_id)
    assert got is not None
    assert (got.state, got.error, got.attempt, got.payload, got.meta) == (
        TaskState.SUCCEEDED, None, 2, {"value": "ok"}, {"phase": "success"},
    )
    assert got.created_at == first.created_at
    assert second.updated_at is not None and first.updated_at is not None and second.updated_at >= first.updated_at


async def test_error_may_be_an_exception(backend: ResultBackend) -> None:
    task_id = tid()
    await backend.set_status(task_id, TaskState.FAILED, error=KeyError("nope"))
    got = await backend.get_status(task_id)
    assert got is not None and got.error is not None and got.error["type"] == "KeyError"


async def test_watch_yields_every_update_in_order(backend: ResultBackend) -> None:
    task_id = tid()
    await backend.set_status(task_id, TaskState.QUEUED)
    async with watching(backend, task_id) as watch:
        assert (await watch.next()).state is TaskState.QUEUED
        for state, attempt in [(TaskState.RUNNING, 0), (TaskState.RETRIED, 0), (TaskState.RUNNING, 1), (TaskState.SUCCEEDED, 1)]:
            await backend.set_status(task_id, state, attempt=attempt)
        seen = [await watch.next() for _ in range(4)]
    assert [(s.state, s.attempt) for s in seen] == [
        (TaskState.RUNNING, 0), (TaskState.RETRIED, 0), (TaskState.RUNNING, 1), (TaskState.SUCCEEDED, 1),
    ]


async def test_watch_sees_updates_written_through_another_connection(
    backend_factory: Callable[..., Awaitable[ResultBackend]],
) -> None:
    writer, reader = await backend_factory(), await backend_factory()
    task_id = tid()
    await writer.set_status(task_id, TaskState.QUEUED)
    async with watching(reader, task_id) as watch:
        assert (await watch.next()).state is TaskState.QUEUED
        await writer.set_status(task_id, TaskState.RUNNING)
        await writer.set_status(task_id, TaskState.SUCCEEDED, payload=7)
        first, second = await watch.next(), await watch.next()
    assert (first.state, second.state, second.payload) == (TaskState.RUNNING, TaskState.SUCCEEDED, 7)


async def test_two_watchers_each_see_every_update(backend: ResultBackend) -> None:
    task_id = tid()
    await backend.set_status(task_id, TaskState.QUEUED)
    async with watching(backend, task_id) as one, watching(backend, task_id) as two:
        await one.next()
        await two.next()
        await backend.set_status(task_id, TaskState.RUNNING)
        await backend.set_status(task_id, TaskState.CANCELLED)
        for watch in (one, two):
            assert [(await watch.next()).state for _ in range(2)] == [TaskState.RUNNING, TaskState.CANCELLED]


async def test_expire_removes_a_status_after_its_ttl(backend: ResultBackend) -> None:
    task_id, kept = tid(), tid()
    await backend.set_status(task_id, TaskState.SUCCEEDED)
    await backend.set_status(kept, TaskState.SUCCEEDED)
    await backend.expire(task_id, SHORT_TTL_S)
    await backend.expire(kept, timedelta(hours=1))
    await eventually(lambda: _gone(backend, task_id), timeout=DELIVERY_DEADLINE_S,
                     message="the expired status to disappear")
    assert await backend.get_status(kept) is not None
    assert task_id not in {s.id for s in await backend.list_statuses(limit=1000)}


async def test_set_honours_its_ttl(backend: ResultBackend) -> None:
    task_id, long_lived = tid(), tid()
    await backend.set_status(task_id, TaskState.SUCCEEDED, ttl=SHORT_TTL_S)
    await backend.set_status(long_lived, TaskState.SUCCEEDED, ttl=timedelta(hours=1))
    await eventually(lambda: _gone(backend, task_id), timeout=DELIVERY_DEADLINE_S, message="the status to expire")
    assert await backend.get_status(long_lived) is not None


async def _gone(backend: ResultBackend, task_id: str) -> bool:
    return await backend.get_status(task_id) is None


async def test_list_statuses_newest_first_with_filters_and_paging(backend: ResultBackend) -> None:
    # Given six statuses written in order over two queues and two task names
    written = []
    for i in range(6):
        task_id = tid(f"l{i}")
        state = TaskState.SUCCEEDED if i % 2 == 0 else TaskState.FAILED
        await backend.set_status(task_id, state, meta={"queue": "qa" if i < 3 else "qb", "task": f"t.{i % 3}"})
        written.append(task_id)
    newest_first = list(reversed(written))
    listed = [s.id for s in await backend.list_statuses(limit=100) if s.id in written]
    assert listed == newest_first
    assert [s.id for s in await backend.list_statuses(state=TaskState.SUCCEEDED)] == [written[4], written[2], written[0]]
    assert [s.id for s in await backend.list_statuses(state="failed", queue="qb")] == [written[5], written[3]]
    assert [s.id for s in await backend.list_statuses(task="t.0")] == [written[3], written[0]]
    assert [s.id for s in await backend.list_statuses(queue="qa", limit=2, offset=1)] == [written[1], written[0]]
    assert await backend.list_statuses(queue="nowhere") == []
    assert await backend.list_statuses(limit=0) == []
    # When an old status is rewritten, then it becomes the newest
    await backend.set_status(written[0], TaskState.RUNNING, meta={"queue": "qa", "task": "t.0"})
    assert (await backend.list_statuses(limit=1))[0].id == written[0]


async def test_bad_values_are_rejected(backend: ResultBackend) -> None:
    with pytest.raises(ValueError):
        await backend.set_status(tid(), TaskState.SUCCEEDED, payload={"x": object()})
    with pytest.raises(ValueError):
        await backend.set_status(tid(), TaskState.SUCCEEDED, payload=float("nan"))
    with pytest.raises(ValueError):
        await backend.set_status(tid(), "exploded")
    with pytest.raises(ValueError):
        await backend.set_status("", TaskState.SUCCEEDED)
    with pytest.raises(ValueError):
        await backend.set_status(tid(), TaskState.SUCCEEDED, ttl=0)
    with pytest.raises(ValueError):
        await backend.list_statuses(limit=-1)


async def test_heartbeats_are_stored_listed_and_updated(backend: ResultBackend) -> None:
    worker = tid("worker")
    await backend.set_heartbeat(heartbeat(worker, inflight=[{"id": "a", "name": "n", "queue": "default"}], processed=1))
    got = await backend.get_heartbeat(worker)
    assert got is not None and (got.worker_id, got.queues, got.processed) == (worker, ["default"], 1)
    assert got.inflight == [{"id": "a", "name": "n", "queue": "default"}]
    # When it is written again, then it replaces the old one
    await backend.set_heartbeat(heartbeat(worker, concurrency=2, inflight=[], processed=3, version="2"))
    got = await backend.get_heartbeat(worker)
    assert got is not None and (got.concurrency, got.processed, got.version, got.inflight) == (2, 3, "2", [])
    listed = [hb for hb in await backend.list_heartbeats() if hb.worker_id == worker]
    assert len(listed) == 1 and listed[0].processed == 3
    assert await backend.get_heartbeat(tid("nobody")) is None


async def test_a_malformed_heartbeat_is_read_sanitised_never_fatal(backend: ResultBackend) -> None:
    # Given a heartbeat someone wrote with bad queue names and garbage fields (issue 15)
    worker, good = tid("garbage"), tid("good")
    await backend.set_heartbeat(heartbeat(
        worker, queues=["bad queue", "ok", 7, "\x1b[31m", "x" * 300], paused_queues=[{"q": 1}, "ok"],
        inflight=[{"id": 5}, {"id": "t1", "queue": "no such/queue"}, {"id": "t2", "queue": "ok"}],
        concurrency="many", pid=-3, processed=1.5, failed=None, retried=True, host=["h"], version={"v": 1}))
    await backend.set_heartbeat(heartbeat(good))
    # Then listing and reading both work: bad names and entries are dropped, counters read as numbers
    listed = {hb.worker_id: hb for hb in await backend.list_heartbeats() if hb.worker_id in (worker, good)}
    assert set(listed) == {worker, good} and listed[good].queues == ["default"]
    bad = listed[worker]
    assert (bad.queues, bad.paused_queues, bad.inflight) == (["ok"], ["ok"], [{"id": "t2", "queue": "ok"}])
    assert (bad.concurrency, bad.pid, bad.processed, bad.failed, bad.retried, bad.host, bad.version) == (0, 0, 1, 0, 0, "", "")
    assert await backend.get_heartbeat(worker) == bad


async def test_heartbeats_list_sorted_by_worker_id(backend: ResultBackend) -> None:
    ids = [f"w-{c}-{uuid.uuid4().hex[:6]}" for c in "cab"]
    for worker in ids:
        await backend.set_heartbeat(heartbeat(worker))
    listed = [hb.worker_id for hb in await backend.list_heartbeats() if hb.worker_id in ids]
    assert listed == sorted(ids)


async def test_heartbeats_expire(backend: ResultBackend) -> None:
    short, long_lived = tid("short"), tid("long")
    await backend.set_heartbeat(heartbeat(short), ttl=SHORT_TTL_S)
    await backend.set_heartbeat(heartbeat(long_lived))
    await eventually(lambda: _no_heartbeat(backend, short), timeout=DELIVERY_DEADLINE_S,
                     message="the heartbeat to expire")
    ids = {hb.worker_id for hb in await backend.list_heartbeats()}
    assert short not in ids and long_lived in ids


async def _no_heartbeat(backend: ResultBackend, worker: str) -> bool:
    return await backend.get_heartbeat(worker) is None


async def test_records_put_get_list_delete(backend: ResultBackend) -> None:
    kind = tid("kind")
    await backend.put_record(kind, "a", {"paused": True, "by": "ops"})
    await backend.put_record(kind, "b", {"n": 1})
    await backend.put_record(kind, "b", {"n": 2})  # replaces
    await backend.put_record(tid("other"), "a", {"x": 1})
    assert await backend.get_record(kind, "a") == {"paused": True, "by": "ops"}
    assert await backend.list_records(kind) == {"a": {"paused": True, "by": "ops"}, "b": {"n": 2}}
    assert await backend.delete_record(kind, "a") is True
    assert await backend.delete_record(kind, "a") is False
    assert await backend.get_record(kind, "a") is None
    assert await backend.list_records(kind) == {"b": {"n": 2}}
    with pytest.raises(ValueError):
        await backend.put_record(kind, "c", {"x": object()})


async def test_records_expire(backend: ResultBackend) -> None:
    kind = tid("kind")
    await backend.put_record(kind, "short", {"v": 1}, ttl=SHORT_TTL_S)
    await backend.put_record(kind, "forever", {"v": 2})
    await eventually(lambda: _no_record(backend, kind, "short"), timeout=DELIVERY_DEADLINE_S,
                     message="the record to expire")
    assert await backend.list_records(kind) == {"forever": {"v": 2}}


async def test_list_records_since_returns_only_those_written_since(backend: ResultBackend) -> None:
    # Given a record written before a mark (issue 15: every heartbeat reloaded every
    # revocation) and one written after it
    kind = tid("kind")
    await backend.put_record(kind, "old", {"v": 1})
    await backend.put_record(kind, "rewritten", {"v": 1})
    await asyncio.sleep(0.2)
    mark = utcnow()
    await asyncio.sleep(0.2)
    await backend.put_record(kind, "new", {"v": 2})
    await backend.put_record(kind, "rewritten", {"v": 2})
    # Then a listing since the mark has only what was written (or rewritten) after it
    assert await backend.list_records(kind, since=mark) == {"new": {"v": 2}, "rewritten": {"v": 2}}
    assert await backend.list_records(kind, since=utcnow() + timedelta(seconds=60)) == {}
    assert set(await backend.list_records(kind)) == {"old", "new", "rewritten"}
    # And a deleted record is gone from both
    await backend.delete_record(kind, "new")
    assert await backend.list_records(kind, since=mark) == {"rewritten": {"v": 2}}
    with pytest.raises(ValueError):
        await backend.list_records(kind, since=mark.replace(tzinfo=None))


async def _stored_record_keys(backend: ResultBackend, kind: str) -> set[str]:
    """The keys of ``kind`` the backend still stores, expired or not (its own tables)."""
    from typing import Any

    b: Any = backend
    name = type(backend).__name__
    if name == "MemoryBackend":
        return {key for k, key in b._store.records if k == kind}
    if name == "SQLiteBackend":
        import sqlite3

        with contextlib.closing(sqlite3.connect(b.path)) as conn:
            return {row[0] for row in conn.execute("SELECT key FROM records WHERE ns = ? AND kind = ?",
                                                   (backend.namespace, kind))}
    if name == "PostgresBackend":
        rows = await b._check_open().fetch(f"SELECT key FROM {b.schema}.records WHERE kind = %(kind)s", {"kind": kind})
        return {row[0] for row in rows}
    if name == "RedisBackend":
        records, expiries, written = b._keys.records(kind)
        client = b._conn.client
        keys = set(await client.hkeys(records)) | set(await client.zrange(expiries, 0, -1))
        keys |= set(await client.zrange(written, 0, -1))
        return {k.decode() if isinstance(k, bytes) else k for k in keys}
    raise AssertionError(f"no raw view of {name}: add one here")


async def test_expired_records_are_deleted_when_records_are_written(backend: ResultBackend) -> None:
    # Given a revocation-like record that expired (issue 15: expired rows were only filtered
    # out of reads on SQLite/PostgreSQL until a periodic cleanup happened to run)
    kind = tid("kind")
    await backend.put_record(kind, "expired", {"v": 1}, ttl=0.3)
    await asyncio.sleep(0.5)
    # When another record of its kind is written (a new revocation)
    await backend.put_record(kind, "fresh", {"v": 2}, ttl=60)
    # Then the expired one is deleted from storage, not only hidden
    assert await _stored_record_keys(backend, kind) == {"fresh"}


async def _no_record(backend: ResultBackend, kind: str, key: str) -> bool:
    return await backend.get_record(kind, key) is None


async def test_audit_records_past_retention_are_pruned_as_new_ones_arrive(backend: ResultBackend) -> None:
    # Given a short retention and three records (issue 15: SQLite/PostgreSQL kept them forever)
    from stem_core.clock import to_iso

    backend.audit_retention = 0.5
    marker = uuid.uuid4().hex
    for i in range(3):
        await backend.append_audit({"marker": marker, "i": i, "at": to_iso(utcnow())})
    # When a new record is appended after they aged past it
    await asyncio.sleep(1.0)
    await backend.append_audit({"marker": marker, "i": 3, "at": to_iso(utcnow())})
    # Then only the new one is left
    assert [r["i"] for r in await backend.list_audit(limit=1000) if r.get("marker") == marker] == [3]


async def test_audit_log_is_newest_first(backend: ResultBackend) -> None:
    marker = uuid.uuid4().hex
    for i in range(5):
        await backend.append_audit({"marker": marker, "i": i, "who": "ops", "what": "purge"})
    mine = [r for r in await backend.list_audit(limit=1000) if r.get("marker") == marker]
    assert [r["i"] for r in mine] == [4, 3, 2, 1, 0]
    assert mine[0]["who"] == "ops" and mine[0]["what"] == "purge"
    page = await backend.list_audit(limit=2, offset=1)
    assert [r["i"] for r in page] == [3, 2]
    with pytest.raises(ValueError):
        await backend.append_audit({"bad": object()})
