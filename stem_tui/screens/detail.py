"""Queue detail: one queue's pending / delayed / in-flight / dead messages, a page at a
time, with the selected message's envelope, status and error below.

Pending, delayed and in-flight messages page forward by the broker's cursor (each page
costs the same however deep); going back pops the cursors of the pages before. Dead
letters page by offset."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Tab, Tabs

from stem_core.ops import QueueDetail

from ..dialogs import plans
from ..source import PAGE_SIZE, Snapshot, Want
from ..text import approx
from ..widgets.filter import Facets
from ..widgets.literal import age, clean, field, literal, short_id, since
from ..widgets.message import MessagePanel, describe
from ..widgets.table import Column, KeyedTable, Row
from .base import ViewScreen, facets_text

STATES = ("pending", "delayed", "inflight", "dead")
STATE_LABELS = {"pending": "pending", "delayed": "delayed", "inflight": "in flight", "dead": "dead"}
COLUMNS: dict[str, tuple[Column, ...]] = {
    "pending": (Column("id", "ID"), Column("task", "TASK"), Column("age", "AGE"), Column("prio", "PRIO"),
                Column("attempt", "TRY"), Column("args", "ARGS")),
    "delayed": (Column("id", "ID"), Column("task", "TASK"), Column("due", "DUE IN"), Column("prio", "PRIO"),
                Column("attempt", "TRY"), Column("args", "ARGS")),
    "inflight": (Column("id", "ID"), Column("task", "TASK"), Column("holder", "HOLDER"), Column("expires", "EXPIRES"),
                 Column("deliveries", "DELIV"), Column("args", "ARGS")),
    "dead": (Column("id", "ID"), Column("task", "TASK"), Column("reason", "REASON"), Column("dead", "DEAD"),
             Column("attempt", "TRY"), Column("args", "ARGS")),
}
ARGS_CHARS = 40


def message_row(state: str, message: dict[str, Any], now: datetime, order: int) -> Row:
    env = message.get("envelope") or {}
    head = (literal(short_id(str(env.get("id", "")))), literal(env.get("name"), "bold"))
    args = literal(env.get("args") or {}, limit=ARGS_CHARS)
    if state == "pending":
        rest = (literal(age(since(env.get("enqueuedAt"), now))), literal(env.get("priority")), literal(env.get("attempt")), args)
    elif state == "delayed":
        due = since(env.get("notBefore"), now)
        rest = (literal(age(-due) if due is not None else None), literal(env.get("priority")), literal(env.get("attempt")), args)
    elif state == "inflight":
        left = since(message.get("lease_expires_at"), now)
        expires = ("expired " + age(left)) if left is not None and left >= 0 else age(-left) if left is not None else None
        rest = (literal(message.get("lease_holder")), literal(expires, "red" if left is not None and left >= 0 else ""),
                literal(message.get("delivery_count")), args)
    else:
        rest = (literal(message.get("reason"), "red"), literal(age(since(message.get("dead_at"), now))),
                literal(env.get("attempt")), args)
    return Row(key=str(env.get("id")), cells=head + rest, order=(order,))


class DetailView(ViewScreen):
    VIEW = "detail"
    TITLE_TEXT = "Queue"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("t", "next_tab", "Next tab"),
        Binding("T", "prev_tab", "Prev tab", show=False),
        Binding("right_square_bracket", "next_page", "Next page", key_display="]"),
        Binding("left_square_bracket", "prev_page", "Prev page", key_display="["),
        Binding("space", "mark", "Mark"),
        Binding("e", "explain", "Explain"),
        Binding("R", "requeue", "Requeue/replay"),
        Binding("X", "remove", "Remove"),
    ]

    def __init__(self, queue: str, state: str = "pending") -> None:
        super().__init__()
        self.queue = queue
        self.state = state if state in STATES else "pending"
        self.page = 0
        # The cursor the current page starts from, and those of the pages before it.
        self.page_cursor: str | None = None
        self._cursors: list[str | None] = []
        self._messages: dict[str, dict[str, Any]] = {}
        self._status: tuple[str, dict[str, Any] | None] | None = None
        self._detail: QueueDetail | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Tabs(*(Tab(STATE_LABELS[s], id=f"tab-{s}") for s in STATES), active=f"tab-{self.state}", id="detail-tabs")
        for state in STATES:
            table = KeyedTable(COLUMNS[state], markable=True, id=f"table-{state}")
            table.display = state == self.state
            yield table
        yield MessagePanel(id="message")

    def on_mount(self) -> None:
        self._table().focus()

    def _table(self) -> KeyedTable:
        return self.query_one(f"#table-{self.state}", KeyedTable)

    def want(self) -> Want:
        if self.state == "dead":
            return Want(view="detail", queue=self.queue, state=self.state, offset=self.page * PAGE_SIZE, limit=PAGE_SIZE)
        return Want(view="detail", queue=self.queue, state=self.state, cursor=self.page_cursor, limit=PAGE_SIZE)

    def title_context(self) -> str:
        return f"{clean(self.queue)} · {STATE_LABELS[self.state]} · page {self.page + 1}"

    def _label_tabs(self) -> None:
        row = self._detail.overview if self._detail is not None else None
        if row is None:
            return
        numbers = {"pending": row.pending, "delayed": row.delayed, "inflight": approx(row.inflight),
                   "dead": row.dead}
        for state, count in numbers.items():
            tab = self.query_one(f"#tab-{state}", Tab)
            label = f"{STATE_LABELS[state]} {count}"
            if tab.label_text != label:
                tab.label = label

    def apply(self, snapshot: Snapshot) -> None:
        detail = snapshot.detail
        if snapshot.want != self.want():
            return  # an older poll, made for another tab or page
        if detail is None:
            note = snapshot.notes.get("detail", "no data")
            self.query_one(MessagePanel).hint(note)
            self._table().sync([])
            return
        self._detail = detail
        self._messages = {str(m.get("envelope", {}).get("id")): m for m in detail.messages}
        rows = (
            (message_row(self.state, m, snapshot.at, i),
             Facets(facets_text(field(m, "envelope", "name"), field(m, "envelope", "id"), m.get("reason"), m.get("lease_holder")),
                    queue=self.queue.lower(), task=str(field(m, "envelope", "name") or "").lower(), state=self.state))
            for i, m in enumerate(detail.messages)
        )
        self._table().sync(self.filtered(rows))
        self._label_tabs()
        self._show_selected()

    # -- selection and status -----------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        panel = self.query_one(MessagePanel)
        key = self._table().current_key
        message = self._messages.get(key) if key is not None else None
        if message is None:
            panel.hint(f"no {STATE_LABELS[self.state]} messages" if not self._messages else "select a message")
            return
        status = self._status[1] if self._status is not None and self._status[0] == key else None
        panel.show(describe(message, status, self.stem.clock()))
        if self._status is None or self._status[0] != key:
            self.stem.lookup_status(key)

    def on_status(self, task_id: str, status: dict[str, Any] | None) -> None:
        self._status = (task_id, status)
        if self._table().current_key == task_id:
            self._show_selected()

    # -- navigation ---------------------------------------------------------------------------

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        state = (event.tab.id or "tab-pending").removeprefix("tab-")
        if state != self.state:
            self._switch(state)

    def _switch(self, state: str) -> None:
        self._table().display = False
        self.state, self.page, self.page_cursor, self._cursors = state, 0, None, []
        self._messages, self._status = {}, None
        self._table().display = True
        self._table().focus()
        self.query_one(Tabs).active = f"tab-{state}"
        self.stem.view_changed(self)

    def action_next_tab(self) -> None:
        self._switch(STATES[(STATES.index(self.state) + 1) % len(STATES)])

    def action_prev_tab(self) -> None:
        self._switch(STATES[(STATES.index(self.state) - 1) % len(STATES)])

    def action_next_page(self) -> None:
        detail, want = self._detail, self.want()
        if detail is None or (detail.state, detail.offset, detail.cursor) != (want.state, want.offset, want.cursor):
            return  # the page shown is not yet the one asked for: wait for it
        if self.state == "dead":
            if detail.next_offset is None:
                return
        elif detail.next_cursor is None:
            return
        else:
            self._cursors.append(self.page_cursor)
            self.page_cursor = detail.next_cursor
        self.page += 1
        self.stem.view_changed(self)

    def action_prev_page(self) -> None:
        if self.page == 0:
            return
        if self.state != "dead":
            self.page_cursor = self._cursors.pop() if self._cursors else None
        self.page -= 1
        self.stem.view_changed(self)

    def action_back(self) -> None:
        if self.stem.filter:
            self.stem.set_filter("")
        else:
            self.app.pop_screen()

    # -- actions --------------------------------------------------------------------------------

    def _items(self) -> list[tuple[str, str]]:
        return [(self.queue, key) for key in self.chosen_keys()]

    def action_explain(self) -> None:
        key = self._table().current_key
        if key is None:
            return self.notify_missing("message")
        self.stem.explain(key)

    def action_requeue(self) -> None:
        items = self._items()
        if not items:
            return self.notify_missing("message")
        if self.state == "dead":
            self.stem.start_plan(plans.replay(self.queue, ids=[i for _, i in items]))
        elif self.state == "pending":
            self.stem.notify("pending messages are ready already; requeue applies to delayed, in-flight and dead ones",
                             severity="warning", markup=False)
        else:
            self.stem.start_plan(plans.requeue_ids(items))

    def action_remove(self) -> None:
        items = self._items()
        if not items:
            return self.notify_missing("message")
        if self.state == "dead":
            self.stem.notify("dead letters are purged per queue (D in Queues or Dead letters)", severity="warning")
            return
        self.stem.start_plan(plans.remove(items))


__all__ = ["DetailView", "STATES", "message_row"]
