"""``MemoryBackend``: task statuses, heartbeats, records and the audit log in process memory.

Values are stored as JSON text and decoded on every read, exactly as a server-backed
adapter would, so callers never share mutable state with the store and anything that
would not survive a real backend does not survive here either.

Statuses sit in an ordered dict kept in update order (``move_to_end`` on every write), so
``list_statuses`` walks newest first and stops after ``offset + limit`` matches; a heap
of deadlines drops expired statuses as later writes arrive. ``watch`` registers a
per-task subscriber queue under the same lock as the write that feeds it, so no update
is missed or reordered.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import threading
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any, AsyncIterator, Callable, ClassVar

from ..._aio import make_waker
from ...clock import monotonic, to_epoch, utcnow
from ...contract.backend import ResultBackend
from ...contract.types import TaskState, TaskStatus, WorkerHeartbeat, decode_heartbeat
from ...errors import BackendUnavailable
from ...settings import AUDIT_PRUNE_BATCH, DEFAULT_NAMESPACE, HEARTBEAT_TTL_SECONDS, RESULT_TTL_SECONDS
from .registry import store_for
from .url import parse_memory_url

BACKEND_OPTIONS = frozenset({"result_ttl", "heartbeat_ttl"})


class _Row:
    __slots__ = ("text", "state", "queue", "task", "created", "deadline", "version")

    def __init__(self, text: str, status: TaskStatus, deadline: float, version: int) -> None:
        self.text = text
        self.state = status.state
        self.created = status.created_at
        self.queue = status.meta.get("queue")
        self.task = status.meta.get("task")
        self.deadline = deadline
        self.version = version


class _Watcher:
    __slots__ = ("items", "wake")

    def __init__(self) -> None:
        self.items: deque[str] = deque()
        self.wake: Callable[[], None] | None = None


class MemoryResultStore:
    """Everything one ``(memory://NAME, namespace)`` result backend holds."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.statuses: OrderedDict[str, _Row] = OrderedDict()
        self.deadlines: list[tuple[float, int, str]] = []
        self.watchers: dict[str, set[_Watcher]] = {}
        self.heartbeats: dict[str, tuple[str, float]] = {}
        # (kind, key) -> (record JSON, monotonic expiry or None, POSIX time written)
        self.records: dict[tuple[str, str], tuple[str, float | None, float]] = {}
        self.audit: list[str] = []
        self.schedules: dict[str, tuple[int, str]] = {}  # id -> (version, document JSON)
        self.audit_times: list[float] = []  # monotonic append time of each audit record
        self._version = 0

    def next_version(self) -> int:
        self._version += 1
        return self._version

    def live_row(self, task_id: str, now: float) -> _Row | None:
        row = self.statuses.get(task_id)
        if row is not None and row.deadline <= now:
            del self.statuses[task_id]
            return None
        return row

    def prune(self, now: float) -> None:
        """Drop statuses whose deadline passed (heap entries of older versions are skipped)."""
        while self.deadlines and self.deadlines[0][0] <= now:
            _, version, task_id = heapq.heappop(self.deadlines)
            row = self.statuses.get(task_id)
            if row is not None and row.version == version:
                del self.statuses[task_id]

    def schedule(self, task_id: str, row: _Row) -> None:
        heapq.heappush(self.deadlines, (row.deadline, row.version, task_id))


def _decode_status(text: str) -> TaskStatus:
    return TaskStatus.from_dict(json.loads(text))


class MemoryBackend(ResultBackend):
    """In-process result backend over a store shared by every backend on ``memory://NAME``."""

    scheme: ClassVar[str] = "memory"

    def __init__(self, store: MemoryResultStore, *, name: str = "default", namespace: str = DEFAULT_NAMESPACE,
                 result_ttl: float = RESULT_TTL_SECONDS, heartbeat_ttl: float = HEARTBEAT_TTL_SECONDS) -> None:
        super().__init__(namespace=namespace, result_ttl=result_ttl, heartbeat_ttl=heartbeat_ttl)
        self.name = name
        self._store = store
        self._closed = False
        self._watchers: set[_Watcher] = set()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "MemoryBackend":
        config = parse_memory_url(url, options, BACKEND_OPTIONS)
        store = store_for("backend", config.name, namespace, MemoryResultStore)
        return cls(store, name=config.name, namespace=namespace, **config.options)

    async def connect(self) -> "MemoryBackend":
        self._closed = False
        return self

    async def close(self) -> None:
        self._closed = True
        # Open watches wake, find the backend closed and raise BackendUnavailable.
        for watcher in list(self._watchers):
            if watcher.wake is not None:
                watcher.wake()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(f"memory://{self.name} result backend is closed")

    # -- statuses -------------------------------------------------------------------

    async def _set_status(self, task_id: str, state: TaskState, *, payload: Any, error: dict[str, Any] | None,
                          attempt: int, meta: dict[str, Any], ttl: float) -> TaskStatus:
        self._check_open()
        store = self._store
        wakers = []
        with store.lock:
            now = monotonic()
            store.prune(now)
            previous = store.live_row(task_id, now)
            stamp = utcnow()
            created = previous.created if previous is not None else stamp
            status = TaskStatus(id=task_id, state=state, payload=payload, error=error, attempt=attempt,
                                meta=meta, created_at=created, updated_at=stamp)
            text = json.dumps(status.to_dict(), separators=(",", ":"))
            row = _Row(text, status, now + ttl, store.next_version())
            store.statuses[task_id] = row
            store.statuses.move_to_end(task_id)
            store.schedule(task_id, row)
            for watcher in store.watchers.get(task_id, ()):
                watcher.items.append(text)
                if watcher.wake is not None:
                    wakers.append(watcher.wake)
        for wake in wakers:
            wake()
        return status  # the stored row keeps only its text: the caller may keep this object

    async def _get_status(self, task_id: str) -> TaskStatus | None:
        self._check_open()
        with self._store.lock:
            row = self._store.live_row(task_id, monotonic())
            text = row.text if row is not None else None
        return _decode_status(text) if text is not None else None

    async def _watch(self, task_id: str) -> AsyncIterator[TaskStatus]:
        self._check_open()
        store = self._store
        watcher = _Watcher()
        with store.lock:
            row = store.live_row(task_id, monotonic())
            if row is not None:
                watcher.items.append(row.text)
            store.watchers.setdefault(task_id, set()).add(watcher)
        self._watchers.add(watcher)
        loop = asyncio.get_running_loop()
        try:
            while True:
                with store.lock:
                    pending = list(watcher.items)
                    watcher.items.clear()
                    if not pending:
                        fut: asyncio.Future[None] = loop.create_future()
                        watcher.wake = make_waker(fut)
                for text in pending:
                    yield _decode_status(text)
                if not pending:
                    try:
                        await fut
                    finally:
                        watcher.wake = None
                    self._check_open()
        finally:
            self._watchers.discard(watcher)
            with store.lock:
                group = store.watchers.get(task_id)
                if group is not None:
                    group.discard(watcher)
                    if not group:
                        del store.watchers[task_id]

    async def _list_statuses(self, state: TaskState | None, queue: str | None, task: str | None,
                             limit: int, offset: int) -> list[TaskStatus]:
        self._check_open()
        store = self._store
        texts: list[str] = []
        with store.lock:
            now = monotonic()
            store.prune(now)
            skipped = 0
            for row in reversed(store.statuses.values()):
                if len(texts) >= limit:
                    break
                if row.deadline <= now:
                    continue
                if (state is not None and row.state != state) or (queue is not None and row.queue != queue) or (
                    task is not None and row.task != task
                ):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                texts.append(row.text)
        return [_decode_status(t) for t in texts]

    async def _expire(self, task_id: str, ttl: float) -> None:
        self._check_open()
        store = self._store
        with store.lock:
            row = store.live_row(task_id, monotonic())
            if row is not None:
                row.deadline = monotonic() + ttl
                row.version = store.next_version()
                store.schedule(task_id, row)

    # -- heartbeats -----------------------------------------------------------------

    async def _set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        self._check_open()
        text = json.dumps(heartbeat.to_dict(), separators=(",", ":"))
        with self._store.lock:
            self._store.heartbeats[heartbeat.worker_id] = (text, monotonic() + ttl)

    def _live_heartbeats(self) -> dict[str, str]:
        now = monotonic()
        beats = self._store.heartbeats
        for worker_id in [w for w, (_, deadline) in beats.items() if deadline <= now]:
            del beats[worker_id]
        return {w: text for w, (text, _) in beats.items()}

    async def _get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        self._check_open()
        with self._store.lock:
            text = self._live_heartbeats().get(worker_id)
        return decode_heartbeat(text) if text is not None else None

    async def _list_heartbeats(self) -> list[WorkerHeartbeat]:
        self._check_open()
        with self._store.lock:
            live = self._live_heartbeats()
        return [hb for hb in (decode_heartbeat(live[w]) for w in sorted(live)) if hb is not None]

    # -- records and audit ----------------------------------------------------------

    async def _put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
        self._check_open()
        text = json.dumps(value, separators=(",", ":"))
        with self._store.lock:
            self._store.records[(kind, key)] = (text, monotonic() + ttl if ttl is not None else None, to_epoch(utcnow()))
            self._live_records(kind)  # deletes the kind's expired records

    def _live_records(self, kind: str, since: float | None = None) -> dict[str, str]:
        now = monotonic()
        records = self._store.records
        out = {}
        for (k, key), (text, deadline, written) in list(records.items()):
            if k != kind:
                continue
            if deadline is not None and deadline <= now:
                del records[(k, key)]
            elif since is None or written >= since:
                out[key] = text
        return out

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        self._check_open()
        with self._store.lock:
            entry = self._store.records.get((kind, key))
            if entry is not None and entry[1] is not None and entry[1] <= monotonic():
                del self._store.records[(kind, key)]
                entry = None
        return json.loads(entry[0]) if entry is not None else None

    async def _list_records(self, kind: str, since: datetime | None) -> dict[str, dict[str, Any]]:
        self._check_open()
        with self._store.lock:
            live = self._live_records(kind, to_epoch(since) if since is not None else None)
        return {key: json.loads(text) for key, text in sorted(live.items())}

    async def _delete_record(self, kind: str, key: str) -> bool:
        self._check_open()
        with self._store.lock:
            entry = self._store.records.pop((kind, key), None)
        return entry is not None and (entry[1] is None or entry[1] > monotonic())

    async def _get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        self._check_open()
        with self._store.lock:
            entry = self._store.schedules.get(schedule_id)
        return (entry[0], json.loads(entry[1])) if entry is not None else None

    async def _list_schedules(self) -> list[tuple[int, dict[str, Any]]]:
        self._check_open()
        with self._store.lock:
            entries = sorted(self._store.schedules.items())
        return [(version, json.loads(text)) for _, (version, text) in entries]

    async def _save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
        self._check_open()
        text = json.dumps(doc)
        with self._store.lock:
            current = self._store.schedules.get(schedule_id)
            if (current[0] if current is not None else None) != version:
                return None
            new = (version or 0) + 1
            self._store.schedules[schedule_id] = (new, text)
        return new

    async def _delete_schedule(self, schedule_id: str, version: int | None) -> bool:
        self._check_open()
        with self._store.lock:
            current = self._store.schedules.get(schedule_id)
            if current is None or (version is not None and current[0] != version):
                return False
            del self._store.schedules[schedule_id]
        return True

    async def _append_audit(self, record: dict[str, Any]) -> None:
        self._check_open()
        text = json.dumps(record, separators=(",", ":"))
        now = monotonic()
        with self._store.lock:
            audit, times = self._store.audit, self._store.audit_times
            audit.append(text)
            times.append(now)
            old = 0
            while old < min(len(times), AUDIT_PRUNE_BATCH) and times[old] < now - self.audit_retention:
                old += 1
            if old:
                del audit[:old], times[:old]

    async def _list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        self._check_open()
        with self._store.lock:
            audit = self._store.audit
            end = len(audit) - offset
            texts = audit[max(0, end - limit):max(0, end)][::-1]
        return [json.loads(t) for t in texts]


__all__ = ["BACKEND_OPTIONS", "MemoryBackend", "MemoryResultStore"]
