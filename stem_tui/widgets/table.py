"""``KeyedTable``: a ``DataTable`` kept in step with a list of rows by row key.

Every refresh hands ``sync`` the full list of ``Row``s; the table removes rows whose key
disappeared, adds new ones, and calls ``update_cell`` only for cells whose text changed.
It is never cleared and refilled, so the cursor stays on its row and Textual repaints
only the changed cells (what keeps ``stem tui`` cheap over SSH). Marks (Space) live here
too, keyed like the rows, so a refresh never moves them to another message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from .internals import DimensionsHook, invalidate_render_caches, replace_cell, set_row_order
from .literal import literal

MARK = "●"
MARK_COLUMN = "mark"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One row: its key and one ``Text`` per column (the mark column excluded)."""

    key: str
    cells: tuple[Text, ...]
    order: tuple[object, ...] = ()


class KeyedTable(DimensionsHook, DataTable[Text], inherit_bindings=False):
    """A row-cursor ``DataTable`` updated in place by row key."""

    # Enter belongs to the view (open / select), so its footer shows what Enter does;
    # vim keys move the cursor too.
    BINDINGS = [
        *(b for b in DataTable.BINDINGS if getattr(b, "key", None) != "enter"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, columns: Sequence[Column], *, markable: bool = False, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cursor_foreground_priority="renderable")
        self.columns_spec = tuple(columns)
        self.markable = markable
        self.marks: set[str] = set()
        self._plain: dict[str, tuple[str, ...]] = {}
        self._order: dict[str, tuple[object, ...]] = {}
        self._measured_widths: list[int] = []

    def on_mount(self) -> None:
        if self.markable:
            self.add_column(Text(" "), width=1, key=MARK_COLUMN)
        for column in self.columns_spec:
            self.add_column(Text(column.label, style="bold"), width=column.width, key=column.key)

    # -- rows -------------------------------------------------------------------------

    def sync(self, rows: Sequence[Row]) -> None:
        """Make the table show exactly ``rows`` (in their order for new rows)."""
        wanted = {row.key: row for row in rows}
        cursor = self.current_key
        for key in [k for k in self._plain if k not in wanted]:
            self._remove(key)
        added = False
        for row in rows:
            plain = tuple(cell.plain + "\0" + str(cell.style) for cell in row.cells)
            old = self._plain.get(row.key)
            if old is None:
                cells = ((self._mark_cell(row.key),) if self.markable else ()) + tuple(row.cells)
                self.add_row(*cells, key=row.key)
                added = True
            elif old != plain:
                for column, cell, before in zip(self.columns_spec, row.cells, old):
                    if cell.plain + "\0" + str(cell.style) != before:
                        self._set_cell(row.key, column.key, cell)
            self._plain[row.key] = plain
            self._order[row.key] = row.order
        self.marks &= set(wanted)
        if added and len(self._plain) > 1 and any(self._order.values()) and not self._in_order(rows):
            # New rows arrive at the bottom; put them in their place (rare: a queue
            # appearing, a new lease) without touching the others' cells.
            self._resort()
        if cursor is not None and cursor in wanted and self.current_key != cursor:
            # Rows above it came or went: keep the cursor on its row, not its index.
            self.select_key(cursor)

    def _set_cell(self, key: str, column_key: str, cell: Text) -> None:
        """``update_cell`` repaints the whole table (``refresh()``): over SSH that is every
        line of it on each poll. A same-width change repaints only its row instead; a
        wider value goes through ``update_cell`` (the column must grow: a relayout).
        (DataTable internals: ``internals.replace_cell``.)"""
        if self._wider(column_key, cell):
            self.update_cell(key, column_key, cell, update_width=True)
            return
        replace_cell(self, key, column_key, cell)
        # One row, not one cell: measured, a row costs fewer bytes than its changed cells
        # refreshed one by one (each region repeats cursor moves and style resets).
        self.refresh_row(self.get_row_index(key))

    def dimensions_updated(self) -> None:
        """DataTable measures new and changed cells on idle, but its line caches are keyed
        by ``_update_count``, which measuring does not bump: lines painted in between (a
        screen refresh before the idle) at the old column widths were served again until
        something else bumped it, e.g. a table of fixed size showing label-wide, cut
        columns until the cursor moved. Bump it when a width changed. (DataTable
        internals: ``internals.DimensionsHook``.)"""
        widths = [column.content_width for column in self.ordered_columns]
        if widths != self._measured_widths:  # also catches cells re-measured just before
            self._measured_widths = widths
            invalidate_render_caches(self)
            self.refresh()

    def _wider(self, column_key: str, cell: Text) -> bool:
        """Does ``cell`` need a wider column? Only then is the width recomputed, because
        that re-lays out (and repaints) the whole table; a same-width change repaints one
        cell."""
        column = self.columns.get(column_key)  # type: ignore[call-overload]
        return column is None or cell.cell_len > column.content_width

    def _resort(self) -> None:
        """Order rows by their ``Row.order`` (the same steps as ``DataTable.sort``, whose
        public key function sees only cell values, not the row key)."""
        order = self._order
        set_row_order(self, sorted(self.rows, key=lambda rk: order.get(rk.value or "", ())))
        self.refresh()

    def _in_order(self, rows: Sequence[Row]) -> bool:
        shown = [rk.value for rk in self._ordered_keys()]
        return shown == [row.key for row in sorted(rows, key=lambda r: r.order)]

    def _remove(self, key: str) -> None:
        self._plain.pop(key, None)
        self._order.pop(key, None)
        try:
            self.remove_row(key)
        except RowDoesNotExist:
            pass

    # -- cursor and marks -----------------------------------------------------------------

    @property
    def current_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:  # noqa: BLE001 - a cursor past the end after rows went away
            return None
        return row_key.value

    def select_key(self, key: str) -> None:
        try:
            self.move_cursor(row=self.get_row_index(key))
        except RowDoesNotExist:
            pass

    def toggle_mark(self) -> None:
        key = self.current_key
        if key is None or not self.markable:
            return
        self.marks.symmetric_difference_update({key})
        self._set_cell(key, MARK_COLUMN, self._mark_cell(key))

    def chosen(self) -> list[str]:
        """The marked rows (in table order), else the row under the cursor."""
        if self.marks:
            return [rk.value for rk in self._ordered_keys() if rk.value in self.marks]  # type: ignore[misc]
        key = self.current_key
        return [key] if key is not None else []

    def _ordered_keys(self) -> list:  # type: ignore[type-arg]
        return sorted(self.rows, key=lambda rk: self.get_row_index(rk))

    def _mark_cell(self, key: str) -> Text:
        return literal(MARK if key in self.marks else " ", "bold")


__all__ = ["Column", "KeyedTable", "MARK", "Row"]
