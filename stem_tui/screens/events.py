"""Events: what changed between polls — queues appearing, verdicts turning bad or good,
pauses, new dead letters, workers joining or going silent, the broker dropping out, and
every action taken (by anyone: read from the audit log)."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from textual.widget import Widget

from stem_core.clock import parse_iso

from ..source import Snapshot
from ..widgets.chrome import Line
from ..widgets.filter import Facets
from ..widgets.literal import age, literal
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

# Events kept in memory (the oldest are dropped).
EVENTS_MAX = 500
ALARMING = frozenset({"stalled", "no-workers"})
KIND_STYLES = {"alarm": "bold red", "recovered": "green", "worker": "cyan", "action": "magenta", "broker": "bold red",
               "queue": "", "dead": "red", "pause": "yellow"}
COLUMNS = (Column("time", "UTC"), Column("kind", "KIND"), Column("what", "WHAT"))


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    at: datetime
    kind: str
    text: str
    queue: str | None = None


class EventLog:
    """Turns consecutive snapshots into events (pure: no I/O, no widgets)."""

    def __init__(self, maximum: int = EVENTS_MAX) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=maximum)
        self._seq = 0
        self._last: Snapshot | None = None
        self._audit_seen: set[str] = set()
        self._down = False

    def _add(self, at: datetime, kind: str, text: str, queue: str | None = None) -> None:
        self._seq += 1
        self.events.append(Event(self._seq, at, kind, text, queue))

    def failed(self, at: datetime, error: str) -> None:
        if not self._down:
            self._down = True
            self._add(at, "broker", f"broker unreachable: {error}")

    def observe(self, snap: Snapshot) -> None:
        at = snap.at
        if self._down:
            self._down = False
            self._add(at, "recovered", "broker reachable again")
        before = self._last
        self._last = snap
        fresh_audit = [r for r in reversed(snap.audit) if str(r.get("id")) not in self._audit_seen]
        self._audit_seen.update(str(r.get("id")) for r in snap.audit)
        if before is None:
            self._add(at, "broker", f"connected: {len(snap.overview.queues)} queue(s), "
                                    f"{snap.overview.live_workers} live worker(s)")
            return
        self._queues(before, snap)
        self._workers(before, snap)
        for record in fresh_audit:
            self._add(_audit_time(record, at), "action", audit_text(record), _audit_queue(record))

    def _queues(self, before: Snapshot, snap: Snapshot) -> None:
        at = snap.at
        old = {q.queue: q for q in before.overview.queues}
        new = {q.queue: q for q in snap.overview.queues}
        for name in sorted(set(new) - set(old)):
            self._add(at, "queue", f"queue {name} appeared ({new[name].verdict_text})", name)
        for name in sorted(set(old) - set(new)):
            self._add(at, "queue", f"queue {name} is gone", name)
        for name in sorted(set(old) & set(new)):
            a, b = old[name], new[name]
            if b.verdict in ALARMING and a.verdict != b.verdict:
                self._add(at, "alarm", f"{name}: {b.verdict_text}", name)
            elif a.verdict in ALARMING and b.verdict not in ALARMING:
                self._add(at, "recovered", f"{name} recovered: {b.verdict_text}", name)
            if b.paused and not a.paused:
                self._add(at, "pause", f"{name} paused by {b.paused_by or '?'}: {b.paused_reason or 'no reason'}", name)
            elif a.paused and not b.paused:
                self._add(at, "pause", f"{name} resumed", name)
            if b.dead > a.dead:
                self._add(at, "dead", f"+{b.dead - a.dead} dead letter(s) in {name} ({b.dead} in all)", name)

    def _workers(self, before: Snapshot, snap: Snapshot) -> None:
        at = snap.at
        old = {w.worker_id: w for w in before.workers}
        new = {w.worker_id: w for w in snap.workers}
        for wid in sorted(set(new) - set(old)):
            w = new[wid]
            self._add(at, "worker", f"worker {wid} joined ({','.join(w.queues)}, concurrency {w.concurrency})")
        for wid in sorted(set(old) - set(new)):
            self._add(at, "worker", f"worker {wid} left (its heartbeat expired or it said goodbye)")
        for wid in sorted(set(old) & set(new)):
            if new[wid].stale and not old[wid].stale:
                self._add(at, "alarm", f"worker {wid} went silent (heartbeat {age(new[wid].heartbeat_age)} old)")
            elif old[wid].stale and not new[wid].stale:
                self._add(at, "recovered", f"worker {wid} is beating again")


def _audit_time(record: dict[str, Any], default: datetime) -> datetime:
    try:
        return parse_iso(str(record.get("at")))
    except ValueError:
        return default


def _audit_queue(record: dict[str, Any]) -> str | None:
    args = record.get("arguments") or {}
    queue = args.get("queue") if isinstance(args, dict) else None
    return queue if isinstance(queue, str) else None


def audit_text(record: dict[str, Any]) -> str:
    args = record.get("arguments") or {}
    shown = {k: v for k, v in args.items() if v not in (None, False, [], {})} if isinstance(args, dict) else args
    result = record.get("result") or {}
    count = result.get("count") if isinstance(result, dict) else None
    outcome = "ok" if record.get("ok") else f"FAILED: {record.get('error')}"
    text = f"{record.get('actor')} {record.get('action')} {json.dumps(shown, default=str, ensure_ascii=False)}"
    text += f" -> {count} {outcome}" if count is not None else f" -> {outcome}"
    if record.get("reason"):
        text += f" (reason: {record.get('reason')})"
    return text


class EventsView(ViewScreen):
    VIEW = "events"
    TITLE_TEXT = "Events"
    BINDINGS: list[Any] = []

    def compose_body(self) -> Iterable[Widget]:
        yield KeyedTable(COLUMNS, id="events-table")
        yield Line(id="events-summary", classes="strip dim")

    def on_mount(self) -> None:
        self.query_one(KeyedTable).focus()

    def apply(self, snapshot: Snapshot | None) -> None:
        self.show_events()

    def show_events(self) -> None:
        log = self.stem.events
        now = self.stem.clock()
        rows = (
            (Row(key=str(e.seq),
                 cells=(literal(e.at.strftime("%H:%M:%S")), literal(e.kind, KIND_STYLES.get(e.kind, "")),
                        literal(e.text, limit=None)),
                 order=(-e.seq,)),
             Facets(facets_text(e.kind, e.text), queue=(e.queue or "").lower() or None, state=e.kind))
            for e in log.events
        )
        table = self.query_one(KeyedTable)
        table.sync(self.filtered(rows))
        newest = log.events[-1] if log.events else None
        self.query_one("#events-summary", Line).show(
            f"{len(log.events)} event(s), newest first" + (f"; last {age((now - newest.at).total_seconds())} ago" if newest else "")
            if newest else "no events yet")


__all__ = ["Event", "EventLog", "EventsView", "audit_text"]
