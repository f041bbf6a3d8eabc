"""The TUI over every broker, fed the corpus: built as ``stem tui`` builds it (settings ->
``DataSource.from_settings`` -> ``StemTui`` with the CLI context), on URLs carrying the
sentinel, over a store holding hostile task names, args, headers, worker ids, heartbeat
queue names, dead-letter reasons and pause reasons.

Every view must render: no failed refresh, no raw control or bidi character and no
sentinel anywhere on screen (header, banner, tables, panels), the hostile text visible in
its escaped form; and the canary untouched.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Static

from stem_core import Envelope, WorkerHeartbeat
from stem_core.clock import to_iso, utcnow
from stem_core.control.pause import pause_queues
from stem_core.ops import Ops
from stem_core.settings import load_settings
from stem_tui.app import StemTui
from stem_tui.cli.tui import cli_context
from stem_tui.source import DataSource
from tests.security.conftest import Cases, Target, clean, secret_urls, spec_params
from tests.security.corpus import HEADERS, NAMES, SENTINEL
from tests.specs import SPECS, require_service

SIZE = (160, 50)
WORK = "work"
SHOWN_NAMES = [n for n in NAMES if n.task_ok and n.id in ("ansi-red", "crlf", "rtl-override", "shell-semicolon",
                                                           "rich-markup", "osc-title")]
EVIL_WORKER = "w-\x1b[2J\x1b[31mroot\u202e"
EVIL_HEARTBEAT_QUEUES = [WORK, "../../etc", "q\x1b[31m", "n" * 300, ""]


async def hostile_scene(ops: Ops, namespace: str, *, bad_queues: bool = False) -> None:
    broker, backend = ops.broker, ops.backend
    for name in SHOWN_NAMES:
        await broker.publish(Envelope(name=name.text, queue=WORK, headers=dict(HEADERS),
                                      args={"to": name.text}))
    held = []
    stream = broker.consume([WORK], prefetch=1, consumer=EVIL_WORKER)
    try:
        async for delivery in stream:
            held.append(delivery)
            break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    if broker.capabilities.dead_letters:
        await broker.dead_letter(held[0], reason="reason\x1b[31m\r\nforged: line\u202e")
    entry = {"id": "x; touch PWNED #", "name": "\x1b]0;owned\x07", "queue": WORK, "started_at": to_iso(utcnow()),
             "lease_expires_at": None, "state": "active", "attempt": 0}
    await backend.set_heartbeat(WorkerHeartbeat(
        worker_id=EVIL_WORKER, namespace=namespace, host="h\x1b[5m", pid=1, queues=EVIL_HEARTBEAT_QUEUES if bad_queues else [WORK],
        concurrency=2, inflight=[entry], processed=1, failed=0, retried=0, paused_queues=["\x1b[2J"],
        version="\x1b[31mv", timestamp=utcnow() - timedelta(seconds=1)))
    await pause_queues(backend, [WORK], reason="\x1b]8;;http://evil\x07click\x1b]8;;\x07", by="[b]mallory[/b]\x1b[5m")


def screen_text(app: StemTui) -> str:
    """Everything the screen stack shows: every table cell, every static, the picture."""
    parts: list[str] = []
    for screen in app.screen_stack:
        for table in screen.query(DataTable):
            for row_key in list(table.rows):
                parts.extend(getattr(cell, "plain", str(cell)) for cell in table.get_row(row_key))
        for widget in screen.query(Static):
            rendered = widget.render()
            parts.append(getattr(rendered, "plain", str(rendered)))
    svg = app.export_screenshot()
    parts.append(html.unescape(re.sub(r"<[^>]+>", "", svg)))
    return "\n".join(parts)


async def settle(pilot: Any) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def poll(pilot: Any) -> None:
    pilot.app.source.refresh_now()
    await settle(pilot)


@pytest.mark.parametrize("atarget", spec_params(), indirect=True)
async def test_every_view_renders_the_corpus_escaped_and_hides_the_secret(atarget: Target, tmp_path: Path) -> None:
    await _every_view(atarget, tmp_path, bad_queues=False)


@pytest.mark.parametrize("atarget", spec_params([s for s in SPECS if s.id in ("memory", "redis")]), indirect=True)
async def test_a_heartbeat_naming_invalid_queues_does_not_break_a_refresh(atarget: Target, tmp_path: Path) -> None:
    """issue 15: one heartbeat carrying an invalid queue name made every TUI refresh fail."""
    await _every_view(atarget, tmp_path, bad_queues=True)


async def _every_view(atarget: Target, tmp_path: Path, *, bad_queues: bool) -> None:
    require_service("redis")
    require_service("postgres")
    target = atarget
    target.url, target.backend_url = secret_urls(target.spec, tmp_path)
    ops = await target.ops()
    await target.plant_canary(ops)
    await hostile_scene(ops, target.namespace, bad_queues=bad_queues)
    settings = load_settings(broker=target.url, backend=target.backend_url, namespace=target.namespace, env={})
    source = DataSource.from_settings(settings, live=False, actor="tester@tui")
    app = StemTui(source, blink=False, cli_context=cli_context(settings))
    cases = Cases()
    async with app.run_test(size=SIZE) as pilot:
        await poll(pilot)
        for key, view in (("1", "queues"), ("2", "leases"), ("3", "workers"), ("4", "dead"), ("5", "events")):
            with cases.case(view):
                await pilot.press(key)
                await poll(pilot)
                banner = str(app.screen.query_one("#banner").render())
                assert source.failures == 0, f"the refresh failed: {banner[:300]}"
                clean(screen_text(app), where=f"TUI {view} view")
        with cases.case("header"):
            header = str(app.screen.query_one("#title-right").render())
            assert SENTINEL not in header and "***" in header or target.url == settings.broker_url, header
        with cases.case("escaped-forms-visible"):
            await pilot.press("3")
            await poll(pilot)
            text = screen_text(app)
            assert "\\x1b[2J" in text or "\\u001b[2J" in text, "the hostile worker id is not shown escaped"
        with cases.case("queue-detail"):
            await pilot.press("1")
            await poll(pilot)
            view = app.active_view()
            table = view.main_table() if view is not None else None
            assert table is not None
            table.select_key(WORK)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await poll(pilot)
            await pilot.press("down", "enter")
            await settle(pilot)
            clean(screen_text(app), where="TUI queue detail")
            assert source.failures == 0
        assert app.is_running
    with cases.case("canary"):
        await target.assert_canary(ops)
    cases.check()
