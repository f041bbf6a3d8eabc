"""Value types of the contracts: frozen dataclasses with JSON-ready ``to_dict()``."""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..clock import to_iso
from ..envelope import Envelope, validate_name


def _iso(value: datetime | None) -> str | None:
    return to_iso(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter can do; front ends grey out the rest and say why."""

    delayed: bool
    priority: bool
    broadcast: bool
    dead_letters: bool
    lease_extension: bool
    peek: bool
    durable: bool
    cross_process: bool

    def to_dict(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for one queue, read without scanning its messages.

    ``oldest_pending_age`` is seconds since the oldest *ready* message became ready
    (enqueue time, or ``not_before`` when it was delayed), None when nothing is pending
    or the broker cannot tell. ``inflight`` is None when the broker cannot know it
    (RabbitMQ without its management API: AMQP does not count unacknowledged messages).
    ``enqueued_total`` / ``completed_total`` are monotonically growing counters (None
    when the adapter keeps none); ``stem_core.ops`` samples them to derive rates.
    ``approximate`` is True when the server only gives approximate counts (SQS: they may
    lag by a few seconds); front ends mark such figures with ``~``.
    """

    queue: str
    pending: int
    delayed: int
    inflight: int | None
    dead: int
    oldest_pending_age: float | None
    enqueued_total: int | None = None
    completed_total: int | None = None
    approximate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "pending": self.pending,
            "delayed": self.delayed,
            "inflight": self.inflight,
            "dead": self.dead,
            "oldest_pending_age": self.oldest_pending_age,
            "enqueued_total": self.enqueued_total,
            "completed_total": self.completed_total,
            "approximate": self.approximate,
        }


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message as ``peek`` sees it; ``state`` is ``pending``, ``delayed`` or ``inflight``."""

    envelope: Envelope
    state: str
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None
    delivery_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "envelope": self.envelope.to_dict(),
            "state": self.state,
            "lease_holder": self.lease_holder,
            "lease_expires_at": _iso(self.lease_expires_at),
            "delivery_count": self.delivery_count,
        }


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """A message removed from its queue, with why and when."""

    envelope: Envelope
    reason: str
    meta: dict[str, Any]
    dead_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "envelope": self.envelope.to_dict(),
            "reason": self.reason,
            "meta": self.meta,
            "dead_at": _iso(self.dead_at),
        }


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """Newest first; ``next_offset`` is None on the last page."""

    entries: list[DeadLetterEntry]
    next_offset: int | None

    @property
    def has_more(self) -> bool:
        return self.next_offset is not None

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "next_offset": self.next_offset}


@dataclass(frozen=True, slots=True)
class MessagePage:
    """One ``peek_page``: the messages, and the opaque cursor of the next page (None on
    the last page). A cursor belongs to the queue and state it came from."""

    messages: list["MessageInfo"]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self.messages], "next_cursor": self.next_cursor}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay moved (or, with ``dry_run``, would move), oldest first."""

    entries: list[DeadLetterEntry]
    dry_run: bool

    @property
    def count(self) -> int:
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "dry_run": self.dry_run, "count": self.count}


class TaskState(str, enum.Enum):
    """Lifecycle of a task in the result backend."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """The stored state of one task. ``error`` is None or ``{type, message, traceback}``.

    Well-known ``meta`` keys written by Stem: ``task`` (name), ``queue``, ``worker``,
    ``started_at``, ``finished_at``, ``max_retries``.
    """

    id: str
    state: TaskState
    payload: Any = None
    error: dict[str, Any] | None = None
    attempt: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "payload": self.payload,
            "error": self.error,
            "attempt": self.attempt,
            "meta": self.meta,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskStatus":
        from ..clock import parse_iso

        return cls(
            id=data["id"],
            state=TaskState(data["state"]),
            payload=data.get("payload"),
            error=data.get("error"),
            attempt=int(data.get("attempt") or 0),
            meta=dict(data.get("meta") or {}),
            created_at=parse_iso(data["created_at"]) if data.get("created_at") else None,
            updated_at=parse_iso(data["updated_at"]) if data.get("updated_at") else None,
        )


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """What a worker says about itself every heartbeat interval.

    ``inflight`` is a list of dicts with ``id``, ``name``, ``queue``, ``started_at`` and
    ``lease_expires_at`` (ISO strings).
    """

    worker_id: str
    namespace: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    inflight: list[dict[str, Any]]
    processed: int
    failed: int
    retried: int
    paused_queues: list[str]
    version: str
    timestamp: datetime
    # Seconds between this worker's heartbeats (None from workers that do not say): the
    # liveness rule waits one interval plus a grace before calling the worker gone.
    interval: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "worker_id": self.worker_id,
            "namespace": self.namespace,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "inflight": [dict(item) for item in self.inflight],
            "processed": self.processed,
            "failed": self.failed,
            "retried": self.retried,
            "paused_queues": list(self.paused_queues),
            "version": self.version,
            "timestamp": _iso(self.timestamp),
        }
        if self.interval is not None:
            data["interval"] = self.interval
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkerHeartbeat":
        from ..clock import parse_iso

        return cls(
            worker_id=data["worker_id"],
            namespace=data.get("namespace", "stem"),
            host=data.get("host", ""),
            pid=int(data.get("pid") or 0),
            queues=list(data.get("queues") or []),
            concurrency=int(data.get("concurrency") or 0),
            inflight=list(data.get("inflight") or []),
            processed=int(data.get("processed") or 0),
            failed=int(data.get("failed") or 0),
            retried=int(data.get("retried") or 0),
            paused_queues=list(data.get("paused_queues") or []),
            version=str(data.get("version") or ""),
            timestamp=parse_iso(data["timestamp"]),
            interval=_positive_or_none(data.get("interval")),
        )


def decode_heartbeat(raw: Any) -> WorkerHeartbeat | None:
    """A stored heartbeat (JSON text, bytes or an already-decoded dict) as a
    ``WorkerHeartbeat``, or None when it is unusable (not JSON, no worker id, no valid
    timestamp). Anyone who can write to the backend can write one, so a bad one is skipped,
    not fatal: garbage counters read as 0, lists keep only their well-formed items, and
    queue names that break the name rule (``validate_name``) are dropped, so one stray
    heartbeat cannot make an overview (``stem inspect queues``, the TUI) fail."""
    try:
        data = json.loads(raw) if isinstance(raw, (str, bytes, bytearray)) else raw
    except ValueError:
        return _skipped("?", "not JSON")
    if not isinstance(data, dict):
        return _skipped("?", "not a JSON object")
    worker_id = data.get("worker_id")
    if not isinstance(worker_id, str) or not worker_id or len(worker_id) > HEARTBEAT_ID_MAX_CHARS:
        return _skipped("?", "no usable worker_id")
    try:
        from ..clock import parse_iso

        timestamp = parse_iso(data["timestamp"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return _skipped(worker_id, "no valid timestamp")
    queues, bad = _queue_names(data.get("queues"))
    paused, bad_paused = _queue_names(data.get("paused_queues"))
    inflight = [dict(e) for e in _as_list(data.get("inflight"))
                if isinstance(e, dict) and isinstance(e.get("id"), str) and _good_queue(e.get("queue", "default"))]
    if bad or bad_paused or len(inflight) != len(_as_list(data.get("inflight"))):
        _skipped(worker_id, "malformed queue names or in-flight entries ignored")
    return WorkerHeartbeat(
        worker_id=worker_id,
        namespace=_text(data.get("namespace"), "stem"),
        host=_text(data.get("host"), ""),
        pid=_count(data.get("pid")),
        queues=queues,
        concurrency=_count(data.get("concurrency")),
        inflight=inflight,
        processed=_count(data.get("processed")),
        failed=_count(data.get("failed")),
        retried=_count(data.get("retried")),
        paused_queues=paused,
        version=_text(data.get("version"), ""),
        timestamp=timestamp,
        interval=_positive_or_none(data.get("interval")),
    )


# A worker id longer than this is not one a worker wrote.
HEARTBEAT_ID_MAX_CHARS = 500
# Each distinct (worker, problem) is logged once per process, at most this many in all.
_NOTED_MAX = 1000
_noted: set[tuple[str, str]] = set()
_log = logging.getLogger("stem.contract")


def _skipped(worker_id: str, why: str) -> None:
    key = (worker_id[:100], why)
    if key not in _noted and len(_noted) < _NOTED_MAX:
        _noted.add(key)
        _log.warning("heartbeat of worker %r: %s", worker_id[:100], why)
    return None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _good_queue(name: Any) -> bool:
    try:
        validate_name(name)
    except ValueError:
        return False
    return True


def _queue_names(value: Any) -> tuple[list[str], bool]:
    items = _as_list(value)
    good = [q for q in items if _good_queue(q)]
    return good, len(good) != len(items) or (value is not None and not isinstance(value, list))


def _count(value: Any) -> int:
    """A counter as written by a worker: a non-negative int (anything else reads as 0)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return max(0, int(value))
    if isinstance(value, str) and value.strip().isdecimal():
        try:
            return int(value.strip())
        except ValueError:  # beyond int()'s digit limit
            return 0
    return 0


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def _positive_or_none(value: Any) -> float | None:
    """A heartbeat's interval as written by any worker: a positive number, else unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        return None
    return float(value)


__all__ = [
    "Capabilities",
    "DeadLetterEntry",
    "DeadLetterPage",
    "MessageInfo",
    "MessagePage",
    "QueueStats",
    "ReplayResult",
    "TaskState",
    "TaskStatus",
    "WorkerHeartbeat",
    "decode_heartbeat",
]
