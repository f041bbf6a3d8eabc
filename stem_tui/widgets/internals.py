"""The one module of the TUI that reaches into Textual's ``DataTable`` internals
(``tests/tui/test_datatable_internals.py`` fails, by name, when a Textual upgrade moves
any of them; textual is pinned to 8.2 in ``pyproject.toml``).

Why: ``KeyedTable`` (``table.py``) keeps a table in step with each refresh while painting
as little as possible (what keeps ``stem tui`` cheap over SSH). The public
``update_cell`` repaints the whole table and ``sort`` sees only cell values, not row
keys; and ``DataTable`` serves its line caches by ``_update_count``, which measuring new
cells does not bump.

What is used: ``DataTable._data`` (row key -> column key -> value),
``DataTable._row_locations`` (a ``textual._two_way_dict.TwoWayDict`` of row key <-> index),
``DataTable._update_count`` (the key of the row, line and ordered-row caches), and the
hook ``DataTable._update_dimensions(new_rows)`` that measures new rows on idle.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from textual._two_way_dict import TwoWayDict
from textual.widgets.data_table import ColumnKey, RowKey


def invalidate_render_caches(table: Any) -> None:
    """Make the table's render caches miss: they are keyed by ``_update_count``."""
    table._update_count += 1


def replace_cell(table: Any, row_key: str, column_key: str, value: object) -> None:
    """Set one cell's value without ``update_cell``'s whole-table refresh; the caller
    repaints what it needs (``refresh_row``). The column's width is not re-measured."""
    table._data[RowKey(row_key)][ColumnKey(column_key)] = value
    invalidate_render_caches(table)


def set_row_order(table: Any, ranked: Sequence[RowKey]) -> None:
    """Show the rows in the order of ``ranked`` (every row key of the table, once),
    as ``DataTable.sort`` does with the order its key function gives."""
    table._row_locations = TwoWayDict({key: index for index, key in enumerate(ranked)})
    invalidate_render_caches(table)


class DimensionsHook:
    """Mixed in before ``DataTable``: ``dimensions_updated()`` runs each time the table
    has measured new or changed rows (``_update_dimensions``, on idle)."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)  # type: ignore[misc]
        self.dimensions_updated()

    def dimensions_updated(self) -> None:
        """Override: called after each measurement."""


__all__ = ["DimensionsHook", "invalidate_render_caches", "replace_cell", "set_row_order"]
