"""``SQLiteBackend``: task statuses, heartbeats, records and the audit log in the SQLite file.

``watch`` works across processes by reading the ``status_events`` change log by cursor
(``id > last seen``), so no intermediate state is skipped. It waits like an idle
consumer: it probes ``PRAGMA data_version`` on the event loop (no thread hop) and reads
the log only when some connection committed, sleeping in between on the file's doorbell
(rung by local writes, and by the backend's ``ChangePoller`` for other processes).

Expired statuses, heartbeats and records are invisible at once (every read compares
their expiry with the database clock) and are deleted every ``CLEANUP_INTERVAL_S`` by
the next status or heartbeat write, which also trims the change log: a bounded batch of
each at a time, and again at the next write while a batch came back full
(``clock.SweepSchedule``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar

from ...clock import SweepSchedule, to_epoch
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.types import TaskState, TaskStatus, WorkerHeartbeat
from ...errors import BackendUnavailable
from ...settings import DEFAULT_NAMESPACE, HEARTBEAT_TTL_SECONDS, RESULT_TTL_SECONDS
from . import store
from .db import SQLiteDatabase
from .url import BUSY_TIMEOUT_S, POLL_INTERVAL_S, parse_sqlite_url

BACKEND_OPTIONS = frozenset({"result_ttl", "heartbeat_ttl", "busy_timeout", "poll_interval"})
# Expired rows are deleted (and the change log trimmed) at most this often per backend.
CLEANUP_INTERVAL_S = 60.0
# A watch with nothing new re-checks that its backend is still open at least this often.
WATCH_WAKE_S = 1.0


class SQLiteBackend(ResultBackend):
    """Result backend over one SQLite file; see the module docstring."""

    scheme: ClassVar[str] = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        result_ttl: float = RESULT_TTL_SECONDS,
        heartbeat_ttl: float = HEARTBEAT_TTL_SECONDS,
        busy_timeout: float = BUSY_TIMEOUT_S,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        super().__init__(namespace=namespace, result_ttl=result_ttl, heartbeat_ttl=heartbeat_ttl)
        self.path = path
        self._db = SQLiteDatabase(path, busy_timeout_s=busy_timeout, unavailable=BackendUnavailable,
                                  label="result backend", poll_interval=poll_interval)
        self._cleanup = SweepSchedule(CLEANUP_INTERVAL_S)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "SQLiteBackend":
        config = parse_sqlite_url(url, options, BACKEND_OPTIONS)
        return cls(config.path, namespace=namespace, **config.options)

    async def connect(self) -> "SQLiteBackend":
        await self._db.open()
        return self

    async def close(self) -> None:
        # Open watches wake, find the backend closed and raise BackendUnavailable.
        await self._db.close()

    def _cleanup_due(self) -> SweepSchedule | None:
        """The schedule, for ``store.run_cleanup`` to sweep along with this write, when due."""
        return self._cleanup if self._cleanup.due() else None

    # -- statuses -------------------------------------------------------------------

    async def _set_status(self, task_id: str, state: TaskState, *, payload: Any, error: dict[str, Any] | None,
                          attempt: int, meta: dict[str, Any], ttl: float) -> TaskStatus:
        write = StatusWrite(task_id, state, payload, error, attempt, meta, ttl)
        stored = await self._db.run(store.set_status, self.namespace, write, self._cleanup_due())
        self._db.bell.ring()
        return stored

    async def _set_statuses(self, items: list[tuple[str, TaskState, dict[str, Any]]], ttl: float) -> None:
        writes = [StatusWrite(task_id, state, None, None, 0, meta, ttl) for task_id, state, meta in items]
        await self._db.run(store.set_statuses, self.namespace, writes, self._cleanup_due())
        self._db.bell.ring()

    def fused_statuses(self, db: SQLiteDatabase, writes: list[StatusWrite]) -> store.StatusWrites | None:
        """For a broker about to write ``writes`` in its own transaction on ``db``: the
        arguments of ``store.put_statuses`` (namespace, writes, cleanup) when ``db`` shares
        this backend's connection, else None (write them through the backend)."""
        if not self._db.shares_link(db):
            return None
        return self.namespace, writes, self._cleanup_due()

    async def _get_status(self, task_id: str) -> TaskStatus | None:
        return await self._db.read(store.get_status, self.namespace, task_id)

    async def _watch(self, task_id: str) -> AsyncIterator[TaskStatus]:
        self._db.check_open()
        # Probe before the snapshot: anything committed after it changes the version.
        version = self._db.data_version()
        current, cursor = await self._db.run(store.watch_start, self.namespace, task_id)
        if current is not None:
            yield current
        while True:
            self._db.check_open()
            rings = self._db.bell.rings
            probe = self._db.data_version()
            if probe is None or probe != version:
                version = probe
                events = await self._db.run(store.events_after, self.namespace, task_id, cursor)
                for cursor, status in events:
                    yield status
                if len(events) >= store.EVENT_BATCH:
                    version = None  # more are waiting: read again at once
                if probe is not None:
                    continue
            await self._db.poller.wait(rings, version, WATCH_WAKE_S)

    async def _list_statuses(self, state: TaskState | None, queue: str | None, task: str | None,
                             limit: int, offset: int) -> list[TaskStatus]:
        return await self._db.read(store.list_statuses, self.namespace, state, queue, task, limit, offset)

    async def _expire(self, task_id: str, ttl: float) -> None:
        await self._db.run(store.expire, self.namespace, task_id, ttl)

    # -- heartbeats -----------------------------------------------------------------

    async def _set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        await self._db.run(store.put_heartbeat, self.namespace, heartbeat, ttl, self._cleanup_due())

    async def _get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        return await self._db.read(store.get_heartbeat, self.namespace, worker_id)

    async def _list_heartbeats(self) -> list[WorkerHeartbeat]:
        return await self._db.read(store.list_heartbeats, self.namespace)

    # -- records and audit ----------------------------------------------------------

    async def _put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
        await self._db.run(store.put_record, self.namespace, kind, key, value, ttl)

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._db.read(store.get_record, self.namespace, kind, key)

    async def _list_records(self, kind: str, since: datetime | None) -> dict[str, dict[str, Any]]:
        return await self._db.read(store.list_records, self.namespace, kind, to_epoch(since) if since else None)

    async def _delete_record(self, kind: str, key: str) -> bool:
        return await self._db.run(store.delete_record, self.namespace, kind, key)

    async def _append_audit(self, record: dict[str, Any]) -> None:
        await self._db.run(store.append_audit, self.namespace, record, self.audit_retention)

    async def _list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self._db.read(store.list_audit, self.namespace, limit, offset)

    # -- schedules ------------------------------------------------------------------

    async def _get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        return await self._db.read(store.get_schedule, self.namespace, schedule_id)

    async def _list_schedules(self) -> list[tuple[int, dict[str, Any]]]:
        return await self._db.read(store.list_schedules, self.namespace)

    async def _save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
        return await self._db.run(store.save_schedule, self.namespace, schedule_id, doc, version)

    async def _delete_schedule(self, schedule_id: str, version: int | None) -> bool:
        return await self._db.run(store.delete_schedule, self.namespace, schedule_id, version)


def fused_statuses(backend: ResultBackend, db: SQLiteDatabase, writes: list[StatusWrite]) -> store.StatusWrites | None:
    """``writes`` ready to ride in a broker's transaction on ``db`` when ``backend`` is a
    SQLite backend on that connection (same file, this process), else None: the broker's
    fused ``enqueue`` and ``ack_with_status`` then take the contract's two steps."""
    if not isinstance(backend, SQLiteBackend):
        return None
    return backend.fused_statuses(db, writes)


__all__ = ["BACKEND_OPTIONS", "SQLiteBackend", "fused_statuses"]
