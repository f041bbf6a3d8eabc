"""``Schedule``: one stored schedule (its definition and run state) as a JSON document,
the catch-up policy (``plan``) and the deterministic task id of a due time."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ..clock import parse_iso, to_iso
from ..contract.backend import check_json
from ..envelope import validate_name
from ..limits import check_task_name
from .spec import Spec, parse_spec

CATCH_UP = ("none", "one", "all")
DEFAULT_CATCH_UP = "one"
# catch_up=none: a due time later than this is skipped.
MISFIRE_GRACE_S = 60.0
# catch_up=all: at most this many missed due times are walked per pass.
CATCH_UP_MAX = 1000
ID_MAX = 100
SOURCES = ("code", "ops")
# The definition fields a code sync compares.
DEFINITION = ("task", "spec", "tz", "args", "queue", "catch_up")


def check_schedule_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > ID_MAX or any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"invalid schedule id {value!r}: 1..{ID_MAX} characters, no spaces or control characters")
    return value


def check_catch_up(value: object) -> str:
    if value not in CATCH_UP:
        raise ValueError(f"invalid catch_up {value!r}: one of none, one, all")
    return str(value)


def _time(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return to_iso(value) if value is not None else None


@dataclass(frozen=True)
class Schedule:
    """A schedule. ``version`` is the store's (the fencing token), not part of the document."""

    id: str
    task: str
    spec: str
    tz: str = "UTC"
    args: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    catch_up: str = DEFAULT_CATCH_UP
    paused: bool = False
    source: str = "ops"
    generation: str = ""
    anchor: datetime | None = None
    created_at: datetime | None = None
    next_run: datetime | None = None
    last_run: datetime | None = None
    last_task_id: str | None = None
    last_enqueued_at: datetime | None = None
    last_error: str | None = None
    claim: dict[str, Any] | None = None
    version: int = 0

    # -- construction ---------------------------------------------------------------

    @classmethod
    def new(cls, id: str, task: str, spec: str, *, now: datetime, args: dict[str, Any] | None = None,
            queue: str | None = None, tz: str = "UTC", catch_up: str = DEFAULT_CATCH_UP, source: str = "ops",
            paused: bool = False) -> "Schedule":
        """A fresh schedule, validated (``ValueError``), its first run computed from ``now``."""
        check_schedule_id(id)
        check_task_name(task)
        parsed = parse_spec(spec, tz=tz)
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise ValueError(f"schedule args must be a JSON object, got {type(args).__name__}")
        check_json(args, "schedule args")
        if queue is not None:
            validate_name(queue)
        if source not in SOURCES:
            raise ValueError(f"invalid schedule source {source!r}")
        anchor = now.replace(microsecond=0)
        made = cls(id=id, task=task, spec=parsed.text, tz=tz, args=dict(args), queue=queue, catch_up=check_catch_up(catch_up),
                   paused=bool(paused), source=source, generation=secrets.token_hex(6), anchor=anchor, created_at=now)
        return replace(made, next_run=made.first_run(now))

    def parsed(self) -> Spec:
        return parse_spec(self.spec, tz=self.tz)

    def first_run(self, now: datetime) -> datetime | None:
        """The first due time from ``now`` on (a one-off keeps its instant even when past:
        the catch-up policy decides)."""
        spec = self.parsed()
        if spec.kind == "at":
            return spec.instant
        if spec.kind == "every":  # one interval after the anchor at the earliest
            return spec.next_after(now, self.anchor)
        return spec.next_after(now - timedelta(microseconds=1), self.anchor)

    def with_definition(self, other: "Schedule", now: datetime) -> "Schedule":
        """This schedule's run state with ``other``'s definition (next run recomputed)."""
        changed = replace(self, **{k: getattr(other, k) for k in DEFINITION}, source=other.source)
        return replace(changed, next_run=changed.first_run(now), claim=None)

    def same_definition(self, other: "Schedule") -> bool:
        return all(getattr(self, k) == getattr(other, k) for k in DEFINITION)

    # -- documents ------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("version")
        for key in ("anchor", "created_at", "next_run", "last_run", "last_enqueued_at"):
            doc[key] = _iso(getattr(self, key))
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any], version: int) -> "Schedule":
        values = {k: doc.get(k) for k in cls.__dataclass_fields__ if k != "version" and k in doc}
        for key in ("anchor", "created_at", "next_run", "last_run", "last_enqueued_at"):
            values[key] = _time(doc.get(key))
        values["args"] = dict(doc.get("args") or {})
        return cls(**values, version=version)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json``): the document plus the version."""
        return {**self.to_doc(), "version": self.version}

    # -- running --------------------------------------------------------------------

    def claimed_by_other(self, owner: str, now: datetime) -> bool:
        claim = self.claim
        return bool(claim) and claim.get("owner") != owner and parse_iso(claim["until"]) > now  # type: ignore[index]

    def plan(self, now: datetime) -> tuple[datetime | None, datetime | None] | None:
        """What to do at ``now``: None when nothing is due (or paused); else ``(due, after)``:
        enqueue ``due`` (None: skip the missed due times) and move ``next_run`` to ``after``."""
        first = self.next_run
        if self.paused or first is None or first > now:
            return None
        spec = self.parsed()
        if self.catch_up == "all":
            return first, spec.next_after(first, self.anchor)
        latest = spec.latest_at_or_before(now, first, self.anchor)
        after = spec.next_after(latest, self.anchor)
        if self.catch_up == "none" and (now - latest).total_seconds() > MISFIRE_GRACE_S:
            return None, after
        return latest, after


def task_id_for(schedule: Schedule, due: datetime) -> str:
    """The task id of ``schedule``'s run at ``due``: the same in every beat, never reused
    by a removed and re-added schedule of the same id (the generation)."""
    digest = hashlib.sha256(f"{schedule.id}\x00{schedule.generation}\x00{to_iso(due)}".encode()).hexdigest()
    return f"sched-{digest[:32]}"


__all__ = [
    "CATCH_UP",
    "CATCH_UP_MAX",
    "DEFAULT_CATCH_UP",
    "MISFIRE_GRACE_S",
    "Schedule",
    "check_catch_up",
    "check_schedule_id",
    "task_id_for",
]
