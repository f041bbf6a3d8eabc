"""Driving the app in Pilot tests: settle after keys, read what the screen shows, and
look at the store through a second connection."""

from __future__ import annotations

import time
from typing import Any

from textual.widgets import DataTable

from stem_core import connect_backend, connect_broker
from stem_core.ops import Ops
from stem_tui.app import StemTui
from stem_tui.widgets.table import KeyedTable

from .seed import FrozenClock, make_app, poll, seed

SETTLE_ROUNDS = 4
TABLES_DEADLINE_S = 30.0
TABLES_POLL_S = 0.01


async def settle(pilot: Any) -> None:
    """Let workers finish and the messages they posted be handled (a preview pushes a
    dialog, a finished action asks for a poll, the poll posts a snapshot...), and let
    every table measure its new cells (DataTable does that when idle: a picture taken
    before it shows label-wide columns)."""
    for _ in range(SETTLE_ROUNDS):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    deadline = time.monotonic() + TABLES_DEADLINE_S
    while any(t._require_update_dimensions or t._updated_cells or t._new_rows
              for screen in pilot.app.screen_stack for t in screen.query(DataTable)):
        if time.monotonic() > deadline:
            raise AssertionError("tables never finished measuring their cells")
        await pilot.pause(TABLES_POLL_S)


async def press(pilot: Any, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def table_keys(app: StemTui) -> list[str]:
    view = app.active_view()
    assert view is not None
    table = view.main_table()
    assert table is not None
    return [str(rk.value) for rk in table._ordered_keys()]


def cell_text(app: StemTui, row_key: str, column: str) -> str:
    view = app.active_view()
    assert view is not None
    table = view.main_table()
    assert isinstance(table, KeyedTable)
    return table.get_cell(row_key, column).plain


async def store_ops(url: str, namespace: str) -> Ops:
    return Ops(await connect_broker(url, namespace=namespace), await connect_backend(url, namespace=namespace),
               actor="checker", persist_rates=False)


async def close_ops(ops: Ops) -> None:
    await ops.broker.close()
    await ops.backend.close()


async def audit_actions(url: str, namespace: str) -> list[dict[str, Any]]:
    ops = await store_ops(url, namespace)
    try:
        return await ops.audit_log(50)
    finally:
        await close_ops(ops)


async def counts(url: str, namespace: str, queue: str) -> dict[str, int]:
    ops = await store_ops(url, namespace)
    try:
        stats = (await ops.broker.queue_stats([queue]))[0]
        return {"pending": stats.pending, "delayed": stats.delayed, "inflight": stats.inflight, "dead": stats.dead}
    finally:
        await close_ops(ops)


async def started(pilot: Any, url: str, namespace: str, clock: FrozenClock, **seed_options: Any) -> Any:
    """Seed the scene, then run the first poll (the app's source is not live)."""
    scene = await seed(url, namespace, clock, **seed_options)
    await poll(pilot)
    return scene


__all__ = ["audit_actions", "cell_text", "counts", "make_app", "press", "settle", "started", "store_ops", "table_keys"]
