"""Schedules: every stored schedule (``docs/schedules.md``) with its next run, last run
and the state of the task that run enqueued, paused ones flagged; pause, resume and run
now go through the same audited ``Ops`` calls as ``stem schedule ...``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable

from ..messages import ActionFailed, ActionFinished
from ..source import Snapshot
from ..widgets.chrome import Line
from ..widgets.filter import Facets
from ..widgets.literal import age, clean, literal, short_id, since
from ..widgets.message import MessagePanel
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

PAUSED_STYLE = "bold yellow"
STATE_STYLES = {"succeeded": "green", "failed": "bold red", "running": "yellow", "queued": "", "retried": "yellow",
                "cancelled": "dim"}
# What matters first (fits 80 columns): when it runs next, how the last run went, paused.
COLUMNS = (
    Column("id", "SCHEDULE"), Column("next", "NEXT RUN"), Column("last", "LAST RUN"), Column("result", "LAST RESULT"),
    Column("paused", "PAUSED"), Column("spec", "SPEC"), Column("task", "TASK"),
)


def relative(raw: Any, now: datetime) -> str:
    """``in 12s`` / ``3m ago`` for an ISO time, ``-`` for none."""
    seconds = since(raw, now)
    if seconds is None:
        return "-"
    return f"{age(seconds)} ago" if seconds >= 0 else f"in {age(-seconds)}"


def schedule_row(s: dict[str, Any], now: datetime) -> Row:
    paused = bool(s.get("paused"))
    state = s.get("last_state")
    spec = str(s.get("spec")).replace(":00.000Z", "Z") + (f" ({s.get('tz')})" if s.get("tz") not in (None, "UTC") else "")
    return Row(
        key=str(s.get("id")),
        cells=(
            literal(s.get("id"), "bold"),
            literal("paused" if paused else relative(s.get("next_run"), now), PAUSED_STYLE if paused else ""),
            literal(relative(s.get("last_run") or s.get("last_enqueued_at"), now)),
            literal(state or "-", STATE_STYLES.get(str(state), "")),
            literal("yes" if paused else "no", PAUSED_STYLE if paused else "dim"), literal(spec), literal(s.get("task")),
        ),
        order=(str(s.get("id")),),
    )


def schedule_text(s: dict[str, Any], now: datetime) -> Text:
    out = Text()
    out.append(literal(s.get("id"), "bold", limit=None))
    out.append(literal(f"  {s.get('task')} · {s.get('spec')} · tz {s.get('tz')} · catch-up {s.get('catch_up')}"
                       f" · from {s.get('source')}", limit=None))
    out.append("\n")
    out.append(Text(f"next run {clean(s.get('next_run') or '-')} ({relative(s.get('next_run'), now)})"
                    + (" · PAUSED" if s.get("paused") else "") + "\n"))
    last_task = s.get("last_task_id")
    out.append(Text(f"last run {clean(s.get('last_run') or '-')} · task {short_id(last_task) if last_task else '-'}"
                    f" · {clean(s.get('last_state') or 'no status')}\n"))
    if s.get("args"):
        out.append(literal(f"args {s.get('args')}", "dim", limit=200))
        out.append("\n")
    if s.get("last_error"):
        out.append(literal(f"last error: {s.get('last_error')}", "red", limit=200))
    return out


class SchedulesView(ViewScreen):
    VIEW = "schedules"
    TITLE_TEXT = "Schedules"
    BINDINGS = [
        Binding("s", "pause_schedule", "Pause"),
        Binding("u", "resume_schedule", "Resume"),
        Binding("n", "run_schedule", "Run now"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield KeyedTable(COLUMNS, id="schedules-table")
        yield Line(id="schedules-summary", classes="strip dim")
        yield MessagePanel(id="schedule-panel")

    def on_mount(self) -> None:
        self._schedules: dict[str, dict[str, Any]] = {}
        self._at: datetime | None = None
        self.query_one(KeyedTable).focus()

    def apply(self, snapshot: Snapshot) -> None:
        if snapshot.want.view != self.VIEW:
            return
        summary = self.query_one("#schedules-summary", Line)
        if snapshot.schedules is None:
            summary.show(snapshot.notes.get("schedules", "reading schedules..."))
            return
        self._at = snapshot.at
        self._schedules = {str(s["id"]): s for s in snapshot.schedules}
        paused = sum(1 for s in snapshot.schedules if s.get("paused"))
        summary.show(f"{len(snapshot.schedules)} schedule(s), {paused} paused · run them with `stem beat`"
                     if snapshot.schedules else "no schedules: `stem schedule add ID TASK 'every 30s'` or @app.periodic")
        rows = (
            (schedule_row(s, snapshot.at),
             Facets(facets_text(s.get("id"), s.get("task"), s.get("spec")), queue=str(s.get("queue") or "").lower(),
                    state=("paused" if s.get("paused") else "active") + f" {s.get('last_state') or ''}"))
            for s in snapshot.schedules
        )
        self.query_one(KeyedTable).sync(self.filtered(rows))
        self._show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _selected(self) -> dict[str, Any] | None:
        key = self.query_one(KeyedTable).current_key
        return self._schedules.get(key) if key is not None else None

    def _show_selected(self) -> None:
        panel = self.query_one(MessagePanel)
        chosen = self._selected()
        if chosen is None:
            panel.hint("select a schedule")
            return
        panel.show(schedule_text(chosen, self._at or self.stem.clock()))

    # -- actions: the audited ops calls of `stem schedule pause|resume|run-now` ------------------

    def action_pause_schedule(self) -> None:
        self._act("pause_schedule", "pause schedule")

    def action_resume_schedule(self) -> None:
        self._act("resume_schedule", "resume schedule")

    def action_run_schedule(self) -> None:
        self._act("run_schedule_now", "run schedule now")

    def _act(self, method: str, title: str) -> None:
        chosen = self._selected()
        if chosen is None:
            self.notify_missing("schedule")
            return
        if self.stem.read_only:
            return
        schedule_id = str(chosen["id"])
        stem = self.stem

        async def work() -> None:
            try:
                result = await stem.source.call(lambda ops: getattr(ops, method)(schedule_id))
            except Exception as exc:  # noqa: BLE001 - one line, never raised into the UI
                stem.post_message(ActionFailed(f"{title} {schedule_id}", stem.source.describe(exc)))
                return
            stem.post_message(ActionFinished(f"{title} {schedule_id}", result, result.command or ""))
            stem.source.refresh_now()

        stem.run_worker(work(), group="stem-action", exit_on_error=False)


__all__ = ["SchedulesView", "schedule_row", "schedule_text"]
