"""What the ops API returns: frozen dataclasses with JSON-ready ``to_dict()``.

Times are aware UTC datetimes (ISO-8601 ``Z`` in ``to_dict``), durations and ages are
seconds (float, rounded to milliseconds in ``to_dict``), rates are per second. A None
means "not known" (an adapter without the counter, a holder without a heartbeat).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Iterator, Mapping
from typing import Any

from ..clock import to_iso

# to_dict() rounds floats to this many decimals: milliseconds for seconds, 1/1000 for rates.
FLOAT_DECIMALS = 3


def jsonable(value: Any) -> Any:
    """Datetimes as ISO text, floats rounded, dataclasses through ``to_dict``, recursively."""
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, float):
        return round(value, FLOAT_DECIMALS)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class _Model:
    """``to_dict()`` for the dataclasses below: every field, made JSON-ready."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class QueueOverview(_Model):
    """One queue in the overview: counts, age, rates, who serves it, and the verdict."""

    queue: str
    pending: int
    delayed: int
    inflight: int | None  # None: the broker cannot know (RabbitMQ without its management API)
    dead: int
    oldest_pending_age: float | None
    in_rate: float | None
    out_rate: float | None
    net_rate: float | None
    rate_window: float | None
    rate_source: str | None
    workers: list[str]
    worker_slots: int
    active: int
    # Leases held by no live worker (None: the broker cannot show its leases).
    unaccounted_leases: int | None
    paused: bool
    paused_reason: str | None
    paused_by: str | None
    paused_until: str | None
    verdict: str
    verdict_text: str
    eta_seconds: float | None = None
    # The counts are the server's approximations (SQS): front ends show them as ``~N``.
    approximate: bool = False


@dataclass(frozen=True, slots=True)
class Overview(_Model):
    """Every queue at one instant, plus what the front end needs to explain the numbers."""

    at: datetime
    namespace: str
    broker: str
    backend: str
    capabilities: dict[str, bool]
    queues: list[QueueOverview]
    live_workers: int
    rates_ready: bool


@dataclass(frozen=True, slots=True)
class WorkerInfo(_Model):
    """One worker from its heartbeat; ``stale`` when older than the ops ``stale_after``."""

    worker_id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    active: int
    reserved: int
    processed: int
    failed: int
    retried: int
    paused_queues: list[str]
    version: str
    heartbeat_at: datetime
    heartbeat_age: float
    stale: bool
    inflight: list[dict[str, Any]]

    @property
    def busy(self) -> bool:
        return self.active >= self.concurrency > 0


@dataclass(frozen=True, slots=True)
class LeaseInfo(_Model):
    """One in-flight delivery joined with its holder's heartbeat."""

    queue: str
    id: str
    name: str
    holder: str | None
    state: str | None
    held_for: float | None
    lease_expires_at: datetime | None
    expires_in: float | None
    heartbeat_age: float | None
    holder_alive: bool
    delivery_count: int
    attempt: int
    stuck: bool
    stuck_reason: str | None


@dataclass(frozen=True, slots=True)
class QueueDetail(_Model):
    """One page of one state of a queue (``messages`` are MessageInfo or DeadLetterEntry dicts).

    Pending, delayed and in-flight pages started from the top or from ``cursor`` carry the
    ``next_cursor`` of the page after (None on the last page): paging by cursor costs the
    same however deep it goes. ``next_offset`` is kept for offset paging (dead letters,
    ``--offset``) and is None after a cursor page (the position is then unknown)."""

    queue: str
    state: str
    overview: QueueOverview | None
    messages: list[dict[str, Any]]
    limit: int
    offset: int
    next_offset: int | None
    cursor: str | None = None
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Blocker(_Model):
    """One reason a task is not running (or, for ``running``/``done``, what it is doing)."""

    code: str
    message: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Explanation(_Model):
    """Where a task is now and why it is not running.

    ``state``: ``queued``, ``delayed``, ``leased``, ``running``, ``dead``, ``done`` or
    ``unknown``. ``blockers`` lists every reason found, most important first.
    """

    task_id: str
    state: str
    queue: str | None
    summary: str
    blockers: list[Blocker]
    position: int | None = None
    due_at: datetime | None = None
    lease: LeaseInfo | None = None
    dead_letter: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    envelope: dict[str, Any] | None = None
    # When the status says running but the worker running it stopped heartbeating: what
    # that means for the task (front ends show it beside the status).
    status_note: str | None = None

    @property
    def found(self) -> bool:
        """The id is known: located in the broker, or at least its status is stored (a
        broker without peek cannot say where a queued task is, but the task exists)."""
        return self.state != "unknown" or self.status is not None


@dataclass(frozen=True, slots=True)
class ActionDetail(Mapping[str, Any]):
    """What an action reports beyond its count and sample. Each action sets the fields it
    knows and leaves the rest None; ``to_dict`` (and so ``--json``) shows the set ones only.

    Also readable as a mapping of those keys (``detail["ids"]``), the shape it had before
    it was typed, so scripts written against that keep working.
    """

    # The control command's outcome (broadcast; pause/resume when live workers were told):
    # the command, who was asked, each reply, who did not answer, whether all did.
    command: str | None = None
    targeted: list[str] | None = None
    replies: dict[str, dict[str, Any]] | None = None
    missing: list[str] | None = None
    ok: bool | None = None
    replies_from: list[str] | None = None
    # Pause/resume persisted for the live workers to apply (nobody told), and why.
    workers: list[str] | None = None
    note: str | None = None
    # The task ids acted on (or, in a dry run, that would be): what a confirmation freezes.
    ids: list[str] | None = None
    # Purge: in-flight messages left alone.
    inflight_kept: int | None = None
    # The action happened but its audit record could not be written.
    audit_error: str | None = None

    def _set(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def to_dict(self) -> dict[str, Any]:
        return {name: jsonable(getattr(self, name)) for name in self._set()}

    def __getitem__(self, key: str) -> Any:
        if key not in self._set():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._set())

    def __len__(self) -> int:
        return len(self._set())


@dataclass(frozen=True, slots=True)
class ActionResult(_Model):
    """What an action did (or, with ``dry_run``, would do): how many, and a sample."""

    action: str
    dry_run: bool
    count: int
    sample: list[dict[str, Any]]
    arguments: dict[str, Any] = field(default_factory=dict)
    detail: ActionDetail = field(default_factory=ActionDetail)
    audit_id: str | None = None
    ok: bool = True
    # The `stem ...` command line doing the same (shown by the TUI, kept in the audit).
    command: str | None = None


__all__ = [
    "ActionDetail",
    "ActionResult",
    "Blocker",
    "Explanation",
    "LeaseInfo",
    "Overview",
    "QueueDetail",
    "QueueOverview",
    "WorkerInfo",
    "jsonable",
]
