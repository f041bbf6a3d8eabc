"""The Queues view (the default): one row per queue, a throughput sparkline and the
verdict of ``ops``; the strip under the table spells out the selected queue's verdict."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable

from stem_core.ops import QueueOverview

from ..dialogs import plans
from ..source import Snapshot
from ..text import VERDICT_STYLES, approx
from ..widgets.chrome import Line
from ..widgets.filter import Facets
from ..widgets.literal import age, literal, rate
from ..widgets.spark import sparkline
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

COLUMNS = (
    Column("queue", "QUEUE"), Column("verdict", "VERDICT"), Column("pending", "PEND"), Column("inflight", "FLIGHT"),
    Column("delayed", "DELAY"), Column("dead", "DEAD"), Column("oldest", "OLDEST"), Column("out", "OUT/s"),
    Column("trend", "TREND", width=8), Column("in", "IN/s"), Column("workers", "WKR"), Column("paused", "PAUSED"),
)


def queue_row(q: QueueOverview, history: tuple[float | None, ...], ascii_only: bool) -> Row:
    verdict_style = VERDICT_STYLES.get(q.verdict, "")
    a = q.approximate
    return Row(
        key=q.queue,
        cells=(
            literal(q.queue, "bold"), literal(q.verdict, verdict_style), literal(approx(q.pending, a)),
            literal(approx(q.inflight, a)), literal(approx(q.delayed, a)), literal(approx(q.dead, a), "red" if q.dead else ""),
            literal(age(q.oldest_pending_age)),
            literal(rate(q.out_rate)), literal(sparkline(history, ascii_only=ascii_only), "cyan"),
            literal(rate(q.in_rate)), literal(f"{len(q.workers)}"), literal("paused" if q.paused else "", "yellow"),
        ),
        order=(q.queue,),
    )


def verdict_line(q: QueueOverview) -> Text:
    out = Text()
    out.append(literal(q.queue, "bold", limit=None))
    out.append(": ")
    out.append(literal(q.verdict_text, VERDICT_STYLES.get(q.verdict, ""), limit=None))
    if q.paused:
        out.append(literal(f" · paused by {q.paused_by or '?'}: {q.paused_reason or 'no reason given'}"
                           + (f" until {q.paused_until}" if q.paused_until else ""), "yellow", limit=None))
    if q.unaccounted_leases and q.verdict != "idle":
        out.append(literal(f" · {q.unaccounted_leases} lease(s) held by no live worker (see Leases)", "red", limit=None))
    if q.workers:
        out.append(literal(f" · {len(q.workers)} worker(s), {q.active}/{q.worker_slots} busy", limit=None))
    return out


class QueuesView(ViewScreen):
    VIEW = "queues"
    TITLE_TEXT = "Queues"
    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("P", "pause_queue", "Pause/resume"),
        Binding("S", "requeue_stuck", "Requeue stuck"),
        Binding("A", "replay_all", "Replay dead"),
        Binding("X", "purge", "Purge"),
        Binding("D", "purge_dead", "Purge dead"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield KeyedTable(COLUMNS, id="queues-table")
        yield Line(id="verdict", classes="strip")
        yield Line(id="summary", classes="strip dim")

    def on_mount(self) -> None:
        self._rows: dict[str, QueueOverview] = {}
        self.query_one(KeyedTable).focus()

    def apply(self, snapshot: Snapshot) -> None:
        ov = snapshot.overview
        self._rows = {q.queue: q for q in ov.queues}
        ascii_only = self.stem.low_colour
        rows = (
            (queue_row(q, snapshot.history.get(q.queue, ()), ascii_only),
             Facets(facets_text(q.queue, q.verdict, "paused" if q.paused else ""), queue=q.queue.lower(),
                    state=f"{q.verdict} {'paused' if q.paused else ''}".strip()))
            for q in ov.queues
        )
        self.query_one(KeyedTable).sync(self.filtered(rows))
        window = next((q.rate_window for q in ov.queues if q.rate_window), None)
        summary = (f"{len(ov.queues)} queue(s) · {ov.live_workers} live worker(s) · "
                   + (f"rates over {age(window)}" if window else "rates after the second poll"))
        if not ov.queues:
            summary = "no queues yet: enqueue a task (N) or start a worker · " + summary
        self.query_one("#summary", Line).show(summary)
        self._show_verdict()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_verdict()

    def _show_verdict(self) -> None:
        line = self.query_one("#verdict", Line)
        q = self._selected()
        if q is None:
            line.show("")
            return
        line.show_text(verdict_line(q))

    def _selected(self) -> QueueOverview | None:
        key = self.query_one(KeyedTable).current_key
        return self._rows.get(key) if key is not None else None

    # -- actions --------------------------------------------------------------------------------

    def action_open(self) -> None:
        q = self._selected()
        if q is not None:
            self.stem.open_queue(q.queue)

    def action_pause_queue(self) -> None:
        q = self._selected()
        if q is None:
            return self.notify_missing("queue")
        if q.paused:
            self.stem.start_plan(plans.resume([q.queue]))
        else:
            self.stem.open_pause([q.queue])

    def action_requeue_stuck(self) -> None:
        q = self._selected()
        if q is None:
            return self.notify_missing("queue")
        self.stem.start_plan(plans.requeue_stuck(q.queue))

    def action_replay_all(self) -> None:
        q = self._selected()
        if q is None:
            return self.notify_missing("queue")
        self.stem.start_plan(plans.replay(q.queue, limit=max(1, q.dead)))

    def action_purge(self) -> None:
        q = self._selected()
        if q is None:
            return self.notify_missing("queue")
        self.stem.start_plan(plans.purge(q.queue))

    def action_purge_dead(self) -> None:
        q = self._selected()
        if q is None:
            return self.notify_missing("queue")
        self.stem.start_plan(plans.purge_dead(q.queue))


__all__ = ["QueuesView", "VERDICT_STYLES", "queue_row", "verdict_line"]
