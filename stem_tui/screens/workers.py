"""Workers: one row per heartbeat (stale ones flagged), and the selected worker's
in-flight tasks with their runtimes below."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable

from stem_core.ops import WorkerInfo

from ..source import Snapshot
from ..widgets.filter import Facets
from ..widgets.literal import age, clean, literal, since
from ..widgets.message import MessagePanel
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

STALE_STYLE = "bold red"
COLUMNS = (
    Column("worker", "WORKER"), Column("beat", "BEAT"), Column("busy", "BUSY"), Column("reserved", "RSV"),
    Column("done", "DONE"), Column("failed", "FAIL"), Column("retried", "RETRY"), Column("queues", "QUEUES"),
    Column("paused", "PAUSED"), Column("host", "HOST"), Column("pid", "PID"),
)


def worker_row(w: WorkerInfo) -> Row:
    style = STALE_STYLE if w.stale else ""
    return Row(
        key=w.worker_id,
        cells=(
            literal(w.worker_id, style or "bold"), literal(age(w.heartbeat_age) + (" STALE" if w.stale else ""), style),
            literal(f"{w.active}/{w.concurrency}", "yellow" if w.busy else ""), literal(w.reserved), literal(w.processed),
            literal(w.failed, "red" if w.failed else ""), literal(w.retried), literal(",".join(w.queues)),
            literal(",".join(w.paused_queues), "yellow"), literal(w.host), literal(w.pid),
        ),
        order=(w.worker_id,),
    )


def inflight_text(w: WorkerInfo, now: datetime) -> Text:
    out = Text()
    out.append(literal(w.worker_id, "bold", limit=None))
    out.append(literal(f"  {w.host} pid {w.pid} · version {w.version} · heartbeat {age(w.heartbeat_age)} ago"
                       + (" (STALE: presumed dead)" if w.stale else ""), STALE_STYLE if w.stale else "", limit=None))
    out.append("\n")
    if not w.inflight:
        out.append("no task in flight", style="dim")
        return out
    for entry in sorted(w.inflight, key=lambda e: str(e.get("started_at") or "~")):
        running = since(entry.get("started_at"), now)
        lease = since(entry.get("lease_expires_at"), now)
        state = "running " + age(running) if running is not None else "reserved (waiting for a slot)"
        lease_text = "" if lease is None else (f", lease expired {age(lease)} ago" if lease >= 0 else f", lease {age(-lease)} left")
        out.append(literal(entry.get("name"), "bold", limit=40))
        out.append(Text(f"  {clean(entry.get('id'))}  {clean(entry.get('queue'))}  {state}{lease_text}\n"))
    return out


class WorkersView(ViewScreen):
    VIEW = "workers"
    TITLE_TEXT = "Workers"
    BINDINGS = [
        Binding("b", "broadcast_worker", "Command worker"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield KeyedTable(COLUMNS, id="workers-table")
        yield MessagePanel(id="worker-panel")

    def on_mount(self) -> None:
        self._workers: dict[str, WorkerInfo] = {}
        self._at: datetime | None = None
        self.query_one(KeyedTable).focus()

    def apply(self, snapshot: Snapshot) -> None:
        self._workers = {w.worker_id: w for w in snapshot.workers}
        self._at = snapshot.at
        rows = (
            (worker_row(w), Facets(facets_text(w.worker_id, w.host, *w.queues), queue=" ".join(w.queues).lower(),
                                   state=("stale" if w.stale else "live") + (" busy" if w.busy else " idle")
                                   + (" paused" if w.paused_queues else "")))
            for w in snapshot.workers
        )
        self.query_one(KeyedTable).sync(self.filtered(rows))
        self._show_selected()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _selected(self) -> WorkerInfo | None:
        key = self.query_one(KeyedTable).current_key
        return self._workers.get(key) if key is not None else None

    def _show_selected(self) -> None:
        panel = self.query_one(MessagePanel)
        worker = self._selected()
        if worker is None:
            panel.hint("no worker heartbeats: start one with `stem worker --app pkg.module:app`"
                       if not self._workers else "select a worker")
            return
        panel.show(inflight_text(worker, self._at or self.stem.clock()))

    def action_broadcast_worker(self) -> None:
        worker = self._selected()
        self.stem.open_broadcast([worker.worker_id] if worker is not None else None)


__all__ = ["WorkersView", "inflight_text", "worker_row"]
