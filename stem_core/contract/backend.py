"""The ``ResultBackend`` contract: task statuses, heartbeats, small records and the audit log.

Rules every adapter must keep (checked by ``tests/contract/test_backend.py``):

* ``set_status`` overwrites the whole status (a previous ``error`` is cleared when the
  new call passes none), keeps the first ``created_at``, sets ``updated_at`` to now and
  keeps it for ``ttl`` seconds (default: the backend's ``result_ttl``, 1 day).
  ``payload`` and ``meta`` must be JSON values; anything else raises ``ValueError``.
* ``watch(task_id)`` first yields the current status (if one exists), then every
  later update **in order**, including updates written by other processes (pub/sub,
  NOTIFY, or polling an ordered change log: a poller must not skip intermediate
  states). It runs until the caller stops iterating.
* ``list_statuses`` is newest ``updated_at`` first and filters on ``state``,
  ``meta["queue"]`` and ``meta["task"]``; it is served by an index, not a scan.
* Heartbeats expire ``heartbeat_ttl`` seconds (default 60) after they were written;
  ``list_heartbeats`` and ``get_heartbeat`` never return expired ones.
* ``expire(task_id, ttl)`` resets a status's time to live.
* Records: small JSON objects under ``(kind, key)`` with an optional TTL, used for
  persisted worker state (paused queues, revocations). Expired records are never returned.
* Audit log: ``append_audit`` stores one record durably; ``list_audit`` is newest first.
* Schedules (the schedule store, ``docs/schedules.md``): JSON documents under an id with an
  integer version. ``save_schedule(id, doc, version)`` is a compare-and-set: it stores
  ``doc`` at ``version + 1`` only while the stored version is still ``version``
  (``None``: only when absent) and returns the new version, else None. Concurrent savers
  of one version: exactly one wins. ``list_schedules`` is sorted by id.

Errors: only ``stem_core.errors`` types; an unreachable server is ``BackendUnavailable``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, ClassVar, NamedTuple, Sequence

from ..errors import ConfigurationError
from ..limits import check_page
from ..settings import (
    DEFAULT_NAMESPACE,
    DEFAULT_PAGE_LIMIT,
    HEARTBEAT_TTL_SECONDS,
    RESULT_TTL_SECONDS,
    audit_retention_seconds,
    validate_namespace,
)
from .types import TaskState, TaskStatus, WorkerHeartbeat

# How often a polling ``watch`` looks for changes.
WATCH_POLL_SECONDS = 0.05


def check_json(value: Any, label: str) -> Any:
    """Raise ``ValueError`` unless ``value`` encodes as strict JSON; returns it unchanged."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{label} is not JSON-serialisable: {exc}") from None
    return value


def normalize_error(error: Any) -> dict[str, Any] | None:
    """``None`` or ``{type, message, traceback}`` (extra keys kept); accepts an exception."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        return {"type": type(error).__name__, "message": str(error), "traceback": None}
    if not isinstance(error, dict):
        raise ValueError(f"error must be a dict or an exception, got {type(error).__name__}")
    out = dict(error)
    out.setdefault("type", "Error")
    out.setdefault("message", "")
    out.setdefault("traceback", None)
    return check_json(out, "error")


class StatusWrite(NamedTuple):
    """One validated status write (``ResultBackend.prepare_status``): what ``set_status``
    stores, and what a broker sharing the backend's server writes in the same round trip
    as its own step (``Broker.enqueue``, ``Broker.ack_with_status``)."""

    task_id: str
    state: TaskState
    payload: Any
    error: dict[str, Any] | None
    attempt: int
    meta: dict[str, Any]
    ttl: float


class ResultBackend(ABC):
    """Abstract async result backend; public methods validate, adapters implement ``_primitives``."""

    scheme: ClassVar[str] = ""

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        result_ttl: float = RESULT_TTL_SECONDS,
        heartbeat_ttl: float = HEARTBEAT_TTL_SECONDS,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        if not result_ttl > 0 or not heartbeat_ttl > 0:
            raise ConfigurationError("result_ttl and heartbeat_ttl must be positive seconds")
        self.result_ttl = float(result_ttl)
        self.heartbeat_ttl = float(heartbeat_ttl)
        # Audit records older than this are pruned as new ones are appended.
        self.audit_retention = audit_retention_seconds()

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "ResultBackend":
        """An unconnected adapter for ``url``; unknown options raise ``ConfigurationError``."""

    async def connect(self) -> "ResultBackend":
        return self

    @abstractmethod
    async def close(self) -> None: ...

    async def ping(self) -> None:
        """One cheap round trip; raises ``BackendUnavailable`` when down."""
        await self.get_status("__stem_ping__")

    async def __aenter__(self) -> "ResultBackend":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- statuses -------------------------------------------------------------------

    async def set_status(
        self,
        task_id: str,
        state: TaskState | str,
        *,
        payload: Any = None,
        error: Any = None,
        attempt: int = 0,
        meta: dict[str, Any] | None = None,
        ttl: float | timedelta | None = None,
    ) -> TaskStatus:
        """Overwrite the status of ``task_id``; returns what was stored."""
        return await self.write_status(
            self.prepare_status(task_id, state, payload=payload, error=error, attempt=attempt, meta=meta, ttl=ttl)
        )

    def prepare_status(
        self,
        task_id: str,
        state: TaskState | str,
        *,
        payload: Any = None,
        error: Any = None,
        attempt: int = 0,
        meta: dict[str, Any] | None = None,
        ttl: float | timedelta | None = None,
    ) -> StatusWrite:
        """``set_status``'s checks (``ValueError`` for non-JSON payload or meta, bad ids,
        attempts or TTLs) without writing: the validated write."""
        _check_id(task_id)
        state = TaskState(state)
        if payload is not None:
            check_json(payload, "payload")
        meta = check_json(dict(meta or {}), "meta")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"attempt must be an integer >= 0, got {attempt!r}")
        return StatusWrite(task_id, state, payload, normalize_error(error), attempt, meta, _ttl(ttl, self.result_ttl))

    async def write_status(self, write: StatusWrite) -> TaskStatus:
        """Store a write ``prepare_status`` checked."""
        return await self._set_status(
            write.task_id, write.state, payload=write.payload, error=write.error, attempt=write.attempt,
            meta=write.meta, ttl=write.ttl,
        )

    async def set_statuses(
        self,
        statuses: Sequence[tuple[str, TaskState | str, dict[str, Any] | None]],
        *,
        ttl: float | timedelta | None = None,
    ) -> None:
        """Write many fresh statuses ``(task_id, state, meta)`` (no payload or error,
        attempt 0): the ``queued`` statuses of ``Stem.enqueue_many``. One round trip or
        transaction where the adapter allows (override ``_set_statuses``)."""
        items = []
        for task_id, state, meta in statuses:
            _check_id(task_id)
            items.append((task_id, TaskState(state), check_json(dict(meta or {}), "meta")))
        if items:
            await self._set_statuses(items, _ttl(ttl, self.result_ttl))

    async def get_status(self, task_id: str) -> TaskStatus | None:
        """The stored status, or None (never stored, or expired)."""
        _check_id(task_id)
        return await self._get_status(task_id)

    def watch(self, task_id: str) -> AsyncIterator[TaskStatus]:
        """Current status, then every update in order, across processes."""
        _check_id(task_id)
        return self._watch(task_id)

    async def list_statuses(
        self,
        state: TaskState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
        offset: int = 0,
    ) -> list[TaskStatus]:
        """Statuses newest first, filtered on state, ``meta.queue`` and ``meta.task``."""
        st = TaskState(state) if state is not None else None
        check_page(limit, offset)
        return await self._list_statuses(st, queue, task, limit, offset)

    async def expire(self, task_id: str, ttl: float | timedelta) -> None:
        """Keep the status only ``ttl`` more seconds."""
        _check_id(task_id)
        await self._expire(task_id, _ttl(ttl, self.result_ttl))

    # -- heartbeats -----------------------------------------------------------------

    async def set_heartbeat(self, heartbeat: WorkerHeartbeat, *, ttl: float | None = None) -> None:
        """Store (replace) a worker's heartbeat; it expires after ``ttl`` (default ``heartbeat_ttl``)."""
        if not isinstance(heartbeat, WorkerHeartbeat):
            raise ValueError(f"expected a WorkerHeartbeat, got {type(heartbeat).__name__}")
        await self._set_heartbeat(heartbeat, _ttl(ttl, self.heartbeat_ttl))

    async def get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        _check_id(worker_id)
        return await self._get_heartbeat(worker_id)

    async def list_heartbeats(self) -> list[WorkerHeartbeat]:
        """Live heartbeats, sorted by worker id."""
        return await self._list_heartbeats()

    # -- records and audit ----------------------------------------------------------

    async def put_record(self, kind: str, key: str, value: dict[str, Any], *, ttl: float | None = None) -> None:
        """Store a small JSON object under ``(kind, key)``, replacing any previous one."""
        _check_id(kind)
        _check_id(key)
        if not isinstance(value, dict):
            raise ValueError("record value must be a dict")
        check_json(value, "record")
        await self._put_record(kind, key, value, _ttl(ttl, None))

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        _check_id(kind)
        _check_id(key)
        return await self._get_record(kind, key)

    async def list_records(self, kind: str, *, since: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Every live record of ``kind`` as ``{key: value}``; with ``since``, only those
        written (put) at or after it, by the clock of the process or server that wrote
        them: a caller polling for new records leaves an overlap for clock skew."""
        _check_id(kind)
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise ValueError(f"since must be an aware datetime, got {since!r}")
        return await self._list_records(kind, since)

    async def delete_record(self, kind: str, key: str) -> bool:
        """Delete; True when something was there."""
        _check_id(kind)
        _check_id(key)
        return await self._delete_record(kind, key)

    async def append_audit(self, record: dict[str, Any]) -> None:
        """Durably append one audit record (who, what, when, arguments, result)."""
        if not isinstance(record, dict):
            raise ValueError("audit record must be a dict")
        check_json(record, "audit record")
        await self._append_audit(record)

    async def list_audit(self, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        check_page(limit, offset)
        return await self._list_audit(limit, offset)

    # -- schedules (the schedule store) ---------------------------------------------

    async def get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        """``(version, document)`` of a schedule, or None."""
        _check_id(schedule_id)
        return await self._get_schedule(schedule_id)

    async def list_schedules(self) -> list[tuple[int, dict[str, Any]]]:
        """Every schedule as ``(version, document)``, sorted by id."""
        return await self._list_schedules()

    async def save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
        """Compare-and-set: store ``doc`` when the stored version is ``version`` (None:
        when there is none); the new version, or None when another writer came first."""
        _check_id(schedule_id)
        if not isinstance(doc, dict):
            raise ValueError("schedule document must be a dict")
        check_json(doc, "schedule")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise ValueError(f"schedule version must be an integer >= 1 or None, got {version!r}")
        return await self._save_schedule(schedule_id, doc, version)

    async def delete_schedule(self, schedule_id: str, version: int | None = None) -> bool:
        """Delete (only at ``version`` when given); True when something was deleted."""
        _check_id(schedule_id)
        return await self._delete_schedule(schedule_id, version)

    # -- primitives -----------------------------------------------------------------

    @abstractmethod
    async def _set_status(
        self,
        task_id: str,
        state: TaskState,
        *,
        payload: Any,
        error: dict[str, Any] | None,
        attempt: int,
        meta: dict[str, Any],
        ttl: float,
    ) -> TaskStatus: ...

    async def _set_statuses(self, items: list[tuple[str, TaskState, dict[str, Any]]], ttl: float) -> None:
        """Default: one ``_set_status`` per item. Adapters override it with a batch."""
        for task_id, state, meta in items:
            await self._set_status(task_id, state, payload=None, error=None, attempt=0, meta=meta, ttl=ttl)

    @abstractmethod
    async def _get_status(self, task_id: str) -> TaskStatus | None: ...

    @abstractmethod
    def _watch(self, task_id: str) -> AsyncIterator[TaskStatus]: ...

    @abstractmethod
    async def _list_statuses(
        self, state: TaskState | None, queue: str | None, task: str | None, limit: int, offset: int
    ) -> list[TaskStatus]: ...

    @abstractmethod
    async def _expire(self, task_id: str, ttl: float) -> None: ...

    @abstractmethod
    async def _set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None: ...

    @abstractmethod
    async def _get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None: ...

    @abstractmethod
    async def _list_heartbeats(self) -> list[WorkerHeartbeat]: ...

    @abstractmethod
    async def _put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None: ...

    @abstractmethod
    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def _list_records(self, kind: str, since: datetime | None) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    async def _delete_record(self, kind: str, key: str) -> bool: ...

    @abstractmethod
    async def _append_audit(self, record: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def _get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None: ...

    @abstractmethod
    async def _list_schedules(self) -> list[tuple[int, dict[str, Any]]]: ...

    @abstractmethod
    async def _save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None: ...

    @abstractmethod
    async def _delete_schedule(self, schedule_id: str, version: int | None) -> bool: ...


def _check_id(value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValueError(f"ids and keys must be non-empty strings of at most 200 characters, got {value!r}")


def _ttl(value: float | timedelta | None, default: float | None) -> Any:
    if value is None:
        return default
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"ttl must be positive seconds, got {value!r}")
    return float(seconds)


__all__ = ["ResultBackend", "StatusWrite", "WATCH_POLL_SECONDS", "check_json", "normalize_error"]
