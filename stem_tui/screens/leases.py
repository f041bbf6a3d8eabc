"""Leases: every in-flight delivery with its holder and the holder's heartbeat; stuck
ones (expired, or held by a worker that is gone) are highlighted and can be taken back."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable

from stem_core.ops import LeaseInfo

from ..dialogs import plans
from ..source import Snapshot
from ..widgets.chrome import Line
from ..widgets.filter import Facets
from ..widgets.literal import age, literal, short_id
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

STUCK_STYLE = "bold red"
COLUMNS = (
    Column("queue", "QUEUE"), Column("id", "ID"), Column("task", "TASK"), Column("holder", "HOLDER"),
    Column("held", "HELD"), Column("expires", "EXPIRES"), Column("beat", "HB AGE"), Column("deliv", "DELIV"),
    Column("stuck", "STUCK"),
)


def lease_key(lease: LeaseInfo) -> str:
    return f"{lease.queue}\x00{lease.id}"


def lease_row(lease: LeaseInfo) -> Row:
    style = STUCK_STYLE if lease.stuck else ""
    expires = lease.expires_in
    expires_text = ("expired " + age(-expires)) if expires is not None and expires <= 0 else age(expires)
    return Row(
        key=lease_key(lease),
        cells=(
            literal(lease.queue, style), literal(short_id(lease.id), style), literal(lease.name, style or "bold"),
            literal(lease.holder, style), literal(age(lease.held_for), style), literal(expires_text, style),
            literal(age(lease.heartbeat_age) if lease.heartbeat_age is not None else "none", style),
            literal(lease.delivery_count, style), literal("STUCK" if lease.stuck else "", style),
        ),
        order=(lease.queue, not lease.stuck, lease.id),
    )


class LeasesView(ViewScreen):
    VIEW = "leases"
    TITLE_TEXT = "Leases"
    BINDINGS = [
        Binding("enter", "open", "Open queue"),
        Binding("space", "mark", "Mark"),
        Binding("e", "explain", "Explain"),
        Binding("R", "requeue", "Requeue"),
        Binding("S", "requeue_stuck", "Requeue stuck"),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield KeyedTable(COLUMNS, markable=True, id="leases-table")
        yield Line(id="lease-why", classes="strip")
        yield Line(id="lease-summary", classes="strip dim")

    def on_mount(self) -> None:
        self._leases: dict[str, LeaseInfo] = {}
        self.query_one(KeyedTable).focus()

    def apply(self, snapshot: Snapshot) -> None:
        if snapshot.want.view != self.VIEW:
            return
        summary = self.query_one("#lease-summary", Line)
        if snapshot.leases is None:
            summary.show(snapshot.notes.get("leases", "reading leases..."))
            return
        self._leases = {lease_key(lease): lease for lease in snapshot.leases}
        rows = (
            (lease_row(lease), Facets(facets_text(lease.queue, lease.name, lease.id, lease.holder, lease.stuck_reason),
                                      queue=lease.queue.lower(), task=lease.name.lower(),
                                      state=("stuck " if lease.stuck else "ok ") + (lease.state or "")))
            for lease in snapshot.leases
        )
        self.query_one(KeyedTable).sync(self.filtered(rows))
        stuck = sum(1 for lease in snapshot.leases if lease.stuck)
        summary.show(f"{len(snapshot.leases)} lease(s), {stuck} stuck" if snapshot.leases else "no message is in flight")
        self._show_why()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_why()

    def _show_why(self) -> None:
        lease = self._selected()
        line = self.query_one("#lease-why", Line)
        if lease is None:
            line.show("")
            return
        text = Text()
        text.append(literal(lease.name, "bold", limit=None))
        text.append(literal(f" {lease.id} attempt {lease.attempt}", limit=None))
        if lease.stuck:
            text.append(literal(f" · stuck: {lease.stuck_reason}", STUCK_STYLE, limit=None))
        else:
            text.append(literal(f" · {lease.state or 'held'} by {lease.holder}", limit=None))
        line.show_text(text)

    def _selected(self) -> LeaseInfo | None:
        key = self.query_one(KeyedTable).current_key
        return self._leases.get(key) if key is not None else None

    def action_open(self) -> None:
        lease = self._selected()
        if lease is not None:
            self.stem.open_queue(lease.queue, "inflight")

    def action_explain(self) -> None:
        lease = self._selected()
        if lease is None:
            return self.notify_missing("lease")
        self.stem.explain(lease.id)

    def action_requeue(self) -> None:
        items = [(lease.queue, lease.id) for key in self.chosen_keys() if (lease := self._leases.get(key)) is not None]
        if not items:
            return self.notify_missing("lease")
        self.stem.start_plan(plans.requeue_ids(items))

    def action_requeue_stuck(self) -> None:
        queues = sorted({lease.queue for lease in self._leases.values() if lease.stuck})
        if not queues:
            self.stem.notify("no stuck lease", severity="information")
            return
        self.stem.start_plan(plans.requeue_stuck(*queues))


__all__ = ["LeasesView", "lease_row"]
