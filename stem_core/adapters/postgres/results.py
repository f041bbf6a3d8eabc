"""``PostgresBackend``: task statuses, heartbeats, records and the audit log in PostgreSQL.

Tables are in the namespace schema (``migrations/0002_results.sql``). Reads never return
rows past ``expires_at``; a background loop deletes them in bounded batches every
``CLEANUP_INTERVAL_S``. ```list_statuses`` is an index range scan per filter combination. Terminal statuses
commit durably; non-terminal ones and heartbeats use ``synchronous_commit=off``
(see ``_fast``), and so do terminal ones a co-located broker writes in its ack
statement: status and ack are then lost together in a crash or not at all, and the
task runs again.

Status writes made in one event-loop turn (the running statuses of a worker's claimed
batch) go out as one statement; every write uses the ``statuses_upsert`` fragment of
``queries.sql``, which ``PostgresBroker`` also puts in its own statements when this
backend is on its database (``Broker.enqueue``/``ack_with_status`` in one round trip).

``watch`` works across processes: ``set_status`` sends the new status in a NOTIFY (in
the same statement as the write, so in commit order); each backend listens on one
dedicated connection once something is watched, and a watcher re-reads the row when a
status was too large for a NOTIFY payload or when the listener had to reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from datetime import datetime
from typing import Any, AsyncIterator, ClassVar, Iterable

from ..._aio import UNSENT, TurnBatch
from ...clock import utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.types import TaskState, TaskStatus, WorkerHeartbeat, decode_heartbeat
from ...errors import BackendUnavailable
from ...settings import AUDIT_PRUNE_BATCH, DEFAULT_NAMESPACE, HEARTBEAT_TTL_SECONDS, PRUNE_BATCH, RESULT_TTL_SECONDS
from .connection import RESULT_CHANNEL_SUFFIX, PostgresConnection, PostgresDatabase, schema_name
from .janitor import VACUUM_CHECK_S, janitor_pass
from .listener import PostgresListener
from .rows import dumps, unique_runs
from .sql import Queries, migrate
from .url import PostgresConfig, parse_url, positive_float, positive_int, same_database

log = logging.getLogger(__name__)

BACKEND_OPTIONS = {"result_ttl": positive_float, "heartbeat_ttl": positive_float, "pool_size": positive_int}
CLEANUP_INTERVAL_S = 60.0
CLEANUP_BATCH_ROWS = 5000
JANITOR_TABLES = ("statuses", "heartbeats", "records")
_FILTERS = (("state", "AND state = %(state)s"), ("queue", "AND queue = %(queue)s"), ("task", "AND task = %(task)s"))
_REREAD = object()


def _status(row: tuple[Any, ...]) -> TaskStatus:
    task_id, state, payload, error, attempt, meta, created, updated = row
    return TaskStatus(id=task_id, state=TaskState(state), payload=payload, error=error, attempt=attempt,
                      meta=dict(meta or {}), created_at=created, updated_at=updated)


class PostgresWatch:
    """One ``watch`` call's queue of statuses (or re-read markers) to yield."""

    __slots__ = ("items", "wake")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.wake = asyncio.Event()

    def push(self, item: Any) -> None:
        self.items.append(item)
        self.wake.set()


class PostgresBackend(ResultBackend):
    """The PostgreSQL result backend; see the module docstring."""

    scheme: ClassVar[str] = "postgresql"

    def __init__(self, config: PostgresConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 result_ttl: float = RESULT_TTL_SECONDS, heartbeat_ttl: float = HEARTBEAT_TTL_SECONDS,
                 pool_size: int | None = None) -> None:
        super().__init__(namespace=namespace, result_ttl=result_ttl, heartbeat_ttl=heartbeat_ttl)
        self._config = config
        self.schema = schema_name(self.namespace)
        self._q = Queries(self.schema)
        self._connection = PostgresConnection(config, self.schema, name=f"stem-{self.namespace}-results",
                                              pool_size=pool_size, label="result backend",
                                              unavailable=BackendUnavailable)
        self._listener: PostgresListener | None = None
        self._watches: dict[str, set[PostgresWatch]] = {}
        self._cleaner: asyncio.Task[None] | None = None
        self._list_queries: dict[tuple[bool, ...], str] = {}
        # Status writes made in one event-loop turn go out together.
        self._writes: TurnBatch[tuple[Any, ...]] = TurnBatch(self._write_rows)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "PostgresBackend":
        config = parse_url(url, options, BACKEND_OPTIONS)
        return cls(config, namespace=namespace, **config.options)

    def __repr__(self) -> str:
        return f"PostgresBackend({self._config.shown_url!r}, namespace={self.namespace!r})"

    async def connect(self) -> "PostgresBackend":
        if await self._connection.open(lambda conn: migrate(conn, self.schema)):
            self._cleaner = asyncio.create_task(self._cleanup_loop(), name=f"stem-pg-cleanup-{self.namespace}")
        return self

    async def close(self) -> None:
        self._connection.mark_closed()  # first: the watchers woken here must find it closed
        for group in self._watches.values():
            for watch in group:
                watch.wake.set()
        cleaner, self._cleaner = self._cleaner, None
        if cleaner is not None:
            cleaner.cancel()
            await asyncio.gather(cleaner, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        await self._writes.drain()  # writes of this turn start (and fail: closed)
        await self._connection.close()

    async def _fast(self) -> PostgresDatabase:
        """The ``synchronous_commit=off`` pool for writes a crash may lose without harm:
        non-terminal statuses (the broker row, not the status, is the truth of a queued or
        running task) and heartbeats. Terminal statuses always commit durably."""
        return await self._connection.fast()

    def _check_open(self) -> PostgresDatabase:
        return self._connection.durable()

    async def _cleanup_loop(self) -> None:
        """Vacuum check every ``VACUUM_CHECK_S``, TTL cleanup every ``CLEANUP_INTERVAL_S``."""
        last_cleanup = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(VACUUM_CHECK_S)
            db = self._connection.durable_pool
            if db is None:
                return
            await janitor_pass(db, self.schema, JANITOR_TABLES)
            if asyncio.get_running_loop().time() - last_cleanup >= CLEANUP_INTERVAL_S:
                last_cleanup = asyncio.get_running_loop().time()
                try:
                    await self.cleanup()
                except BackendUnavailable as exc:
                    log.warning("stem: result cleanup skipped: %s", exc)

    async def cleanup(self) -> int:
        """Delete expired statuses (batch by batch), heartbeats and records; returns how many statuses."""
        db = self._check_open()
        total = 0
        while True:
            deleted = await db.execute(self._q.cleanup_statuses, {"limit": CLEANUP_BATCH_ROWS})
            total += deleted
            if deleted < CLEANUP_BATCH_ROWS:
                break
        await db.execute(self._q.cleanup_heartbeats)
        await db.execute(self._q.cleanup_records)
        return total

    # -- statuses -------------------------------------------------------------------

    async def _set_status(self, task_id: str, state: TaskState, *, payload: Any, error: dict[str, Any] | None,
                          attempt: int, meta: dict[str, Any], ttl: float) -> TaskStatus:
        row = status_row(StatusWrite(task_id, state, payload, error, attempt, meta, ttl))
        self._check_open()
        created_at = await self._writes.add(row)
        return TaskStatus(id=task_id, state=state, payload=json.loads(row[2]), error=error, attempt=attempt,
                          meta=meta, created_at=created_at, updated_at=row[6])

    async def _write_rows(self, batch: list[tuple[Any, ...]]) -> list[Any]:
        """Send the status writes made during one event-loop turn together: the running
        statuses of a worker's claimed batch start in the same turn, so they cost one
        statement instead of one each. Outcomes: each write's created_at, or the error of
        its statement (and of every later one: they are not sent)."""
        outcomes: list[Any] = [UNSENT] * len(batch)
        try:
            # One row per id in a statement: a batch that repeats an id goes as several
            # statements, in call order (a later write of a task still wins).
            for group in unique_runs(list(enumerate(batch)), lambda item: item[1][0]):
                terminal = any(TaskState(row[1]).is_terminal for _, row in group)
                db = self._check_open() if terminal else await self._fast()
                if len(group) == 1:
                    rows = await db.fetch(self._q.set_status, status_params(group[0][1]))
                else:
                    rows = await db.fetch(self._q.set_statuses, status_rows_params([row for _, row in group]))
                created = {task_id: at for task_id, at, _ in rows}
                for k, row in group:
                    outcomes[k] = created[row[0]]
        except Exception as exc:  # noqa: BLE001 - the writes not yet stored fail with it
            outcomes = [exc if outcome is UNSENT else outcome for outcome in outcomes]
        return outcomes

    async def _set_statuses(self, items: list[tuple[str, TaskState, dict[str, Any]]], ttl: float) -> None:
        fresh = fresh_statuses(items, ttl)
        db = self._check_open() if any(w.state.is_terminal for w in fresh) else await self._fast()
        await db.fetch(self._q.set_statuses, statuses_params(fresh))

    def colocated_queries(self, config: PostgresConfig) -> Queries | None:
        """This backend's statements when it is open on the database ``config`` points at,
        so a broker there can write our statuses in its own statements (``fused.py``);
        None otherwise."""
        if self._connection.is_open and same_database(self._config, config):
            return self._q
        return None

    async def _get_status(self, task_id: str) -> TaskStatus | None:
        rows = await self._check_open().fetch(self._q.get_status, {"id": task_id})
        return _status(rows[0]) if rows else None

    def _list_query(self, present: tuple[bool, ...]) -> str:
        query = self._list_queries.get(present)
        if query is None:
            filters = " ".join(fragment for (_, fragment), on in zip(_FILTERS, present) if on)
            query = self._list_queries[present] = self._q.list_statuses.replace("{filters}", filters)
        return query

    async def _list_statuses(self, state: TaskState | None, queue: str | None, task: str | None, limit: int,
                             offset: int) -> list[TaskStatus]:
        if limit == 0:
            return []
        query = self._list_query((state is not None, queue is not None, task is not None))
        params = {"state": state.value if state is not None else None, "queue": queue, "task": task,
                  "limit": limit, "offset": offset}
        return [_status(row) for row in await self._check_open().fetch(query, params)]

    async def _expire(self, task_id: str, ttl: float) -> None:
        await self._check_open().execute(self._q.expire_status, {"id": task_id, "ttl": ttl})

    # -- watch ----------------------------------------------------------------------

    def _on_notify(self, payload: str) -> None:
        task_id, _, body = payload.partition("\n")
        group = self._watches.get(task_id)
        if not group:
            return
        item: Any = _REREAD
        if body:
            try:
                item = TaskStatus.from_dict(json.loads(body))
            except (ValueError, KeyError, TypeError):
                item = _REREAD
        for watch in group:
            watch.push(item)

    def _on_reconnect(self) -> None:
        for group in self._watches.values():
            for watch in group:
                watch.push(_REREAD)

    async def _watch(self, task_id: str) -> AsyncIterator[TaskStatus]:
        self._check_open()
        watch = PostgresWatch()
        self._watches.setdefault(task_id, set()).add(watch)
        try:
            if self._listener is None:
                self._listener = PostgresListener(self._config, self.schema + RESULT_CHANNEL_SUFFIX, self._on_notify,
                                                  self._on_reconnect, unavailable=BackendUnavailable)
            await self._listener.start()
            last: TaskStatus | None = None
            watch.push(_REREAD)  # the current status, read after LISTEN is in place
            while True:
                while watch.items:
                    item = watch.items.popleft()
                    status = await self._get_status(task_id) if item is _REREAD else item
                    if status is None or not _is_newer(status, last):
                        continue
                    last = status
                    yield status
                watch.wake.clear()
                if not watch.items:
                    await watch.wake.wait()
                self._check_open()
        finally:
            group = self._watches.get(task_id)
            if group is not None:
                group.discard(watch)
                if not group:
                    del self._watches[task_id]

    # -- heartbeats -----------------------------------------------------------------

    async def _set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        await (await self._fast()).execute(self._q.set_heartbeat,
                                         {"id": heartbeat.worker_id, "data": dumps(heartbeat.to_dict()), "ttl": ttl})

    async def _get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        rows = await self._check_open().fetch(self._q.get_heartbeat, {"id": worker_id})
        return decode_heartbeat(rows[0][0]) if rows else None

    async def _list_heartbeats(self) -> list[WorkerHeartbeat]:
        rows = await self._check_open().fetch(self._q.list_heartbeats)
        return [hb for hb in (decode_heartbeat(row[0]) for row in rows) if hb is not None]

    # -- records and audit ----------------------------------------------------------

    async def _put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
        await self._check_open().execute(self._q.put_record, {"kind": kind, "key": key, "value": dumps(value), "ttl": ttl,
                                                              "batch": PRUNE_BATCH})

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        rows = await self._check_open().fetch(self._q.get_record, {"kind": kind, "key": key})
        return rows[0][0] if rows else None

    async def _list_records(self, kind: str, since: datetime | None) -> dict[str, dict[str, Any]]:
        rows = await self._check_open().fetch(self._q.list_records, {"kind": kind, "since": since})
        return {key: value for key, value in rows}

    async def _delete_record(self, kind: str, key: str) -> bool:
        rows = await self._check_open().fetch(self._q.delete_record, {"kind": kind, "key": key})
        return bool(rows and rows[0][0])

    async def _append_audit(self, record: dict[str, Any]) -> None:
        await self._check_open().execute(self._q.append_audit, {"record": dumps(record), "retention": self.audit_retention,
                                                                 "batch": AUDIT_PRUNE_BATCH})

    async def _list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        if limit == 0:
            return []
        rows = await self._check_open().fetch(self._q.list_audit, {"limit": limit, "offset": offset})
        return [row[0] for row in rows]

    # -- schedules ------------------------------------------------------------------

    async def _get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        rows = await self._check_open().fetch(self._q.get_schedule, {"id": schedule_id})
        return (int(rows[0][0]), rows[0][1]) if rows else None

    async def _list_schedules(self) -> list[tuple[int, dict[str, Any]]]:
        rows = await self._check_open().fetch(self._q.list_schedules)
        return [(int(version), doc) for version, doc in rows]

    async def _save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
        db = self._check_open()
        if version is None:
            rows = await db.fetch(self._q.insert_schedule, {"id": schedule_id, "doc": dumps(doc)})
        else:
            rows = await db.fetch(self._q.update_schedule, {"id": schedule_id, "doc": dumps(doc), "version": version})
        return int(rows[0][0]) if rows else None

    async def _delete_schedule(self, schedule_id: str, version: int | None) -> bool:
        rows = await self._check_open().fetch(self._q.delete_schedule, {"id": schedule_id, "version": version})
        return bool(rows)


def status_row(write: StatusWrite) -> tuple[Any, ...]:
    """One write as a row of ``status_upsert``/``statuses_upsert`` (queries.sql): ``(task_id, state, payload
    JSON, error JSON, attempt, meta JSON, written at, ttl)``."""
    error = dumps(write.error) if write.error is not None else None
    return (write.task_id, write.state.value, dumps(write.payload), error, write.attempt, dumps(write.meta),
            utcnow(), float(write.ttl))


_ROW_PARAMS = ("ids", "states", "payloads", "errors", "attempts", "metas", "ats", "ttls")
_ONE_PARAMS = ("task_id", "state", "payload", "error", "attempt", "meta", "at", "ttl")


def status_params(row: tuple[Any, ...]) -> dict[str, Any]:
    """The bind parameters of ``status_upsert`` for one ``status_row``."""
    return dict(zip(_ONE_PARAMS, row))


def status_rows_params(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The bind parameters of ``statuses_upsert`` for ``status_row`` rows (ids unique)."""
    return {name: list(column) for name, column in zip(_ROW_PARAMS, zip(*rows))}


def statuses_params(writes: Iterable[StatusWrite]) -> dict[str, Any]:
    """The bind parameters of ``statuses_upsert`` for ``writes`` (ids unique)."""
    return status_rows_params([status_row(w) for w in writes])


def fresh_statuses(items: Iterable[tuple[str, TaskState, dict[str, Any]]], ttl: float) -> list[StatusWrite]:
    """``set_statuses`` items as writes (no payload or error, attempt 0); a repeated id
    keeps its last write (one row per id in a statement)."""
    latest = {task_id: (state, meta) for task_id, state, meta in items}
    return [StatusWrite(task_id, state, None, None, 0, meta, ttl) for task_id, (state, meta) in latest.items()]


def _is_newer(status: TaskStatus, last: TaskStatus | None) -> bool:
    """Skip what the watcher already yielded (a NOTIFY may repeat the initial read)."""
    if last is None:
        return True
    if status.updated_at is not None and last.updated_at is not None and status.updated_at < last.updated_at:
        return False
    return status.to_dict() != last.to_dict()


__all__ = ["PostgresBackend", "fresh_statuses", "status_params", "status_row", "status_rows_params", "statuses_params"]
