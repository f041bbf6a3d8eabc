"""The Textual internals ``stem_tui/widgets/internals.py`` relies on, checked on the
installed Textual: ``DataTable``'s private state has the shape the fence writes, its
caches are keyed by ``_update_count``, ``_update_dimensions`` is the hook measuring new
rows, and each fenced function does what the public API would show. A Textual upgrade
that moves any of them fails here, by name, before ``KeyedTable`` paints stale cells."""

from __future__ import annotations

import inspect

from textual._two_way_dict import TwoWayDict
from textual.app import App, ComposeResult
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from stem_tui.widgets.internals import DimensionsHook, invalidate_render_caches, replace_cell, set_row_order


class HookedTable(DimensionsHook, DataTable[str]):
    def __init__(self) -> None:
        super().__init__(id="table")
        self.measured = 0

    def dimensions_updated(self) -> None:
        self.measured += 1


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield HookedTable()


def fill(table: DataTable[str]) -> None:
    table.add_column("name", key="name")
    table.add_column("count", key="count")
    for key, count in (("a", "1"), ("b", "2"), ("c", "3")):
        table.add_row(key, count, key=key)


def test_the_private_names_exist_where_the_fence_reads_them() -> None:
    source = inspect.getsource(DataTable)
    # the caches are keyed by _update_count: bumping it is what makes them miss
    assert "cache_key = (update_count, row_index)" in inspect.getsource(DataTable._get_row_renderables)
    assert "self._update_count" in inspect.getsource(DataTable.ordered_rows.fget)  # type: ignore[attr-defined]
    # _update_dimensions(new_rows) is what the idle handler calls to measure new rows
    assert list(inspect.signature(DataTable._update_dimensions).parameters) == ["self", "new_rows"]
    assert "self._update_dimensions(new_rows)" in source
    assert "self._row_locations: TwoWayDict[RowKey, int]" in source
    assert callable(TwoWayDict.get) and callable(TwoWayDict.get_key)


async def test_a_mounted_table_has_the_state_the_fence_writes() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(HookedTable)
        fill(table)
        await pilot.pause()
        assert isinstance(table._data, dict) and table._data[RowKey("b")][ColumnKey("count")] == "2"
        assert isinstance(table._row_locations, TwoWayDict) and table._row_locations.get(RowKey("c")) == 2
        assert isinstance(table._update_count, int)
        # the hook ran when the new rows were measured
        assert table.measured >= 1


async def test_replace_cell_changes_the_value_and_misses_the_caches() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(HookedTable)
        fill(table)
        await pilot.pause()
        assert table.get_row("b") == ["b", "2"]  # fills the ordered-row cache
        before = table._update_count
        replace_cell(table, "b", "count", "9")
        assert table._update_count == before + 1
        assert table.get_cell("b", "count") == "9" and table.get_row_at(1) == ["b", "9"]
        invalidate_render_caches(table)
        assert table._update_count == before + 2


async def test_set_row_order_is_what_the_public_index_api_shows() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(HookedTable)
        fill(table)
        await pilot.pause()
        assert [table.get_row_at(i)[0] for i in range(3)] == ["a", "b", "c"]  # cached at this count
        set_row_order(table, [RowKey("c"), RowKey("a"), RowKey("b")])
        assert [table.get_row_at(i)[0] for i in range(3)] == ["c", "a", "b"]
        assert table.get_row_index("c") == 0 and [row.key.value for row in table.ordered_rows] == ["c", "a", "b"]
        await pilot.pause()
        table.move_cursor(row=0)
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key == RowKey("c")
