"""Dead letters across queues: the newest of every queue that has any, with the reason,
envelope and last error of the selected one; replay or purge from here."""

from __future__ import annotations

from typing import Any, Iterable

from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable

from ..dialogs import plans
from ..source import DEAD_PER_QUEUE, Snapshot
from ..widgets.chrome import Line
from ..widgets.filter import Facets
from ..widgets.literal import age, field, literal, short_id
from ..widgets.message import MessagePanel, describe
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

COLUMNS = (
    Column("queue", "QUEUE"), Column("id", "ID"), Column("task", "TASK"), Column("reason", "REASON"),
    Column("dead", "DEAD"), Column("attempt", "TRY"),
)


def dead_key(entry: dict[str, Any]) -> str:
    return f"{entry.get('queue')}\x00{field(entry, 'envelope', 'id')}"


class DeadView(ViewScreen):
    VIEW = "dead"
    TITLE_TEXT = "Dead letters"
    BINDINGS = [
        Binding("enter", "open", "Open queue"),
        Binding("space", "mark", "Mark"),
        Binding("e", "explain", "Explain"),
        Binding("R", "replay", "Replay"),
        Binding("A", "replay_all", "Replay queue"),
        Binding("D", "purge_dead", "Purge queue"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield KeyedTable(COLUMNS, markable=True, id="dead-table")
        yield Line(id="dead-summary", classes="strip dim")
        yield MessagePanel(id="dead-panel")

    def on_mount(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._dead_counts: dict[str, int] = {}
        self._status: tuple[str, dict[str, Any] | None] | None = None
        self.query_one(KeyedTable).focus()

    def apply(self, snapshot: Snapshot) -> None:
        self._dead_counts = {q.queue: q.dead for q in snapshot.overview.queues if q.dead}
        if snapshot.want.view != self.VIEW:
            return
        summary = self.query_one("#dead-summary", Line)
        if snapshot.dead is None:
            summary.show(snapshot.notes.get("dead", "reading dead letters..."))
            return
        self._entries = {dead_key(e): e for e in snapshot.dead}
        rows = []
        for index, e in enumerate(snapshot.dead):
            dead_for = (snapshot.at - e["dead_at_time"]).total_seconds()
            row = Row(
                key=dead_key(e),
                cells=(literal(e.get("queue"), "bold"), literal(short_id(str(field(e, "envelope", "id")))),
                       literal(field(e, "envelope", "name"), "bold"), literal(e.get("reason"), "red"),
                       literal(age(dead_for)), literal(field(e, "envelope", "attempt"))),
                order=(-e["dead_at_time"].timestamp(), dead_key(e)),
            )
            name = str(field(e, "envelope", "name") or "")
            rows.append((row, Facets(facets_text(e.get("queue"), name, field(e, "envelope", "id"), e.get("reason")),
                                     queue=str(e.get("queue")).lower(), task=name.lower(), state=str(e.get("reason")).lower())))
        self.query_one(KeyedTable).sync(self.filtered(rows))
        total = sum(self._dead_counts.values())
        summary.show(f"{total} dead letter(s) in {len(self._dead_counts)} queue(s); newest {DEAD_PER_QUEUE} per queue shown"
                     + ("; page through one queue with Enter" if total > len(snapshot.dead) else "")
                     if total else "no dead letters")
        self._show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _selected(self) -> dict[str, Any] | None:
        key = self.query_one(KeyedTable).current_key
        return self._entries.get(key) if key is not None else None

    def _show_selected(self) -> None:
        panel = self.query_one(MessagePanel)
        entry = self._selected()
        if entry is None:
            panel.hint("no dead letters" if not self._entries else "select a dead letter")
            return
        task_id = str(field(entry, "envelope", "id"))
        status = self._status[1] if self._status is not None and self._status[0] == task_id else None
        panel.show(describe(entry, status, self.stem.clock()))
        if self._status is None or self._status[0] != task_id:
            self.stem.lookup_status(task_id)

    def on_status(self, task_id: str, status: dict[str, Any] | None) -> None:
        self._status = (task_id, status)
        self._show_selected()

    def action_open(self) -> None:
        entry = self._selected()
        if entry is not None:
            self.stem.open_queue(str(entry.get("queue")), "dead")

    def action_explain(self) -> None:
        entry = self._selected()
        if entry is None:
            return self.notify_missing("dead letter")
        self.stem.explain(str(field(entry, "envelope", "id")))

    def action_replay(self) -> None:
        chosen = [self._entries[k] for k in self.chosen_keys() if k in self._entries]
        if not chosen:
            return self.notify_missing("dead letter")
        by_queue: dict[str, list[str]] = {}
        for e in chosen:
            by_queue.setdefault(str(e.get("queue")), []).append(str(field(e, "envelope", "id")))
        if len(by_queue) > 1:
            self.stem.notify("marked dead letters span several queues: replay one queue at a time", severity="warning")
            return
        queue, ids = next(iter(by_queue.items()))
        self.stem.start_plan(plans.replay(queue, ids=ids))

    def action_replay_all(self) -> None:
        entry = self._selected()
        if entry is None:
            return self.notify_missing("dead letter")
        queue = str(entry.get("queue"))
        self.stem.start_plan(plans.replay(queue, limit=max(1, self._dead_counts.get(queue, 1))))

    def action_purge_dead(self) -> None:
        entry = self._selected()
        if entry is None:
            return self.notify_missing("dead letter")
        self.stem.start_plan(plans.purge_dead(str(entry.get("queue"))))


__all__ = ["DeadView"]
