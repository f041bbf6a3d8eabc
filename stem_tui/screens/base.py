"""``ViewScreen``: what every view shares — the frame, the filter, read-only checks and
the hand-off of snapshots from the app.

A view declares its ``VIEW`` name (what the data source must read for it), its
``BINDINGS`` (shown in the footer, listed by ``?`` and offered by the ``:`` palette) and
which of its actions write (``WRITE_ACTIONS``: hidden and refused in read-only mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget

from ..source import Snapshot, Want
from ..widgets.chrome import Banner, FilterBar, StemFooter, TitleBar
from ..widgets.filter import Facets, FilterQuery
from ..widgets.table import KeyedTable, Row

if TYPE_CHECKING:
    from ..app import StemTui

# Actions that change broker or worker state, wherever they are bound.
WRITE_ACTIONS = frozenset({
    "requeue", "requeue_stuck", "replay", "replay_all", "purge", "purge_dead", "remove", "pause_queue",
    "enqueue", "broadcast", "broadcast_worker", "pause_schedule", "resume_schedule", "run_schedule",
})


class ViewScreen(Screen[None]):
    VIEW: ClassVar[str] = "queues"
    TITLE_TEXT: ClassVar[str] = "Queues"
    # Set once the view's widgets exist; snapshots arriving before that wait for resume.
    ready: bool = False

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield TitleBar(id="title")
        yield from self.compose_body()
        yield FilterBar()
        yield StemFooter(id="footer")

    def compose_body(self) -> Iterable[Widget]:
        return ()

    @property
    def stem(self) -> "StemTui":
        return self.app  # type: ignore[return-value]

    # -- data -------------------------------------------------------------------------------

    def want(self) -> Want:
        return Want(view=self.VIEW)

    def apply(self, snapshot: Snapshot) -> None:
        """Show ``snapshot`` (called by the app on every poll while this view is active)."""

    def title_context(self) -> str:
        return ""

    def on_mount(self) -> None:
        # Textual calls each class's on_mount along the MRO: the views' own ones run too.
        self.ready = True

    def on_screen_resume(self) -> None:
        self.stem.view_shown(self)

    def sync_chrome(self) -> None:
        """Banner, title and filter state from the app (after a poll, a view switch or a filter)."""
        if not self.query(TitleBar):
            return  # not composed yet: on_screen_resume syncs it
        stem = self.stem
        self.query_one(Banner).set_problem(stem.problem)
        left = self.TITLE_TEXT + (f" · {self.title_context()}" if self.title_context() else "")
        if stem.filter:
            left += f" · filter: {stem.filter.source}"
        if stem.read_only:
            left += " · READ-ONLY"
        self.query_one(TitleBar).set(left, stem.context_line())

    def filtered(self, rows: Iterable[tuple[Row, Facets]]) -> list[Row]:
        query: FilterQuery = self.stem.filter
        return [row for row, facets in rows if not query or query.matches(facets)]

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in WRITE_ACTIONS and self.stem.read_only:
            return False
        return True

    def on_data_table_row_selected(self, event: Any) -> None:
        # A mouse click on the highlighted row: the same as Enter.
        event.stop()
        opener = getattr(self, "action_open", None)
        if opener is not None:
            opener()

    def action_mark(self) -> None:
        table = self.main_table()
        if table is not None:
            table.toggle_mark()

    def main_table(self) -> KeyedTable | None:
        tables = list(self.query(KeyedTable).results())
        visible = [t for t in tables if t.display]
        return visible[0] if visible else None

    def chosen_keys(self) -> list[str]:
        table = self.main_table()
        return table.chosen() if table is not None else []

    def open_filter(self) -> None:
        self.query_one(FilterBar).open(self.stem.filter.source)

    def on_filter_bar_applied(self, event: FilterBar.Applied) -> None:
        if event.text is not None:
            self.stem.set_filter(event.text)
        table = self.main_table()
        if table is not None:
            table.focus()

    def set_age(self, text: str, style: str = "") -> None:
        # The age ticks on a timer: it may fire while this view is still composing.
        for footer in self.query(StemFooter):
            footer.set_age(text, style)

    def notify_missing(self, what: str) -> None:
        self.stem.notify(f"select a {what} first", severity="warning")


def facets_text(*parts: Any) -> str:
    return " ".join(str(p) for p in parts if p is not None).lower()


__all__ = ["ViewScreen", "WRITE_ACTIONS", "facets_text"]
