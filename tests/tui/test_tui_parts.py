"""The parts under the app: the source never overlaps polls, keyed tables touch only
changed cells, the filter grammar, sparklines, literal text, the event log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets.data_table import ColumnKey

from stem_core import Broker, ResultBackend, connect_backend, connect_broker
from stem_tui.app import StemTui
from stem_tui.screens.events import EventLog
from stem_tui.source import DataSource, Want
from stem_tui.widgets.filter import Facets, FilterQuery
from stem_tui.widgets.literal import clean, literal
from stem_tui.widgets.spark import sparkline
from stem_tui.widgets.table import Column, KeyedTable, Row
from tests.tui.helpers import settle
from tests.tui.seed import FrozenClock, seed


async def test_polls_never_overlap_and_a_refresh_during_a_poll_runs_once_after(store, clock: FrozenClock) -> None:
    # Given a broker whose counters answer only when the test says so
    url, ns = store
    gate = asyncio.Event()
    calls = {"now": 0, "max": 0, "total": 0}

    async def connect() -> tuple[Broker, ResultBackend]:
        broker = await connect_broker(url, namespace=ns)
        real = broker.queue_stats

        async def slow(*args: Any, **kwargs: Any) -> Any:
            calls["now"] += 1
            calls["total"] += 1
            calls["max"] = max(calls["max"], calls["now"])
            try:
                await gate.wait()
                return await real(*args, **kwargs)
            finally:
                calls["now"] -= 1

        broker.queue_stats = slow  # type: ignore[method-assign]
        return broker, await connect_backend(url, namespace=ns)

    app = StemTui(DataSource(connect, clock=clock, live=False), blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await seed(url, ns, clock)
        # When refresh is asked for many times while the first poll hangs
        for _ in range(5):
            app.source.refresh_now()
            await pilot.pause()
        assert calls == {"now": 1, "max": 1, "total": 1}
        gate.set()
        await settle(pilot)
        # Then one more poll ran after it, never two at once, and input stayed live
        assert calls["max"] == 1 and calls["total"] == 2
        await pilot.press("3")
        assert type(app.screen).__name__ == "WorkersView"


async def test_interval_steps_and_pause() -> None:
    async def never() -> tuple[Broker, ResultBackend]:
        raise AssertionError("not connected in this test")

    source = DataSource(never, interval=2.0, live=False)
    assert source.step_interval(+1) == 5.0 and source.step_interval(+1) == 10.0
    assert source.step_interval(-1) == 5.0
    for _ in range(10):
        source.step_interval(-1)
    assert source.interval == 0.5
    source.failures = 3
    assert source.retry_delay() == 4.0  # 1 s floor x 2^(3-1)
    source.interval = 5.0
    assert source.retry_delay() == 10.0  # capped


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable((Column("name", "NAME"), Column("n", "N")), markable=True)


class FixedTableApp(TableApp):
    CSS = "KeyedTable { height: 6; width: 60; }"


def rows(values: dict[str, int]) -> list[Row]:
    return [Row(key=k, cells=(literal(k), literal(v)), order=(k,)) for k, v in values.items()]


async def test_keyed_table_updates_only_changed_cells() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(KeyedTable)
        updates: list[tuple[str, str]] = []
        real = table._set_cell

        def counting(row: Any, column: Any, value: Any) -> None:
            updates.append((str(row), str(column)))
            real(row, column, value)

        table._set_cell = counting  # type: ignore[method-assign]
        table.sync(rows({"a": 1, "b": 2, "c": 3}))
        await pilot.pause()
        assert updates == [] and table.row_count == 3
        table.sync(rows({"a": 1, "b": 2, "c": 3}))
        assert updates == []
        table.sync(rows({"a": 1, "b": 5, "c": 3}))
        assert updates == [("b", "n")]
        table.select_key("c")
        table.sync(rows({"c": 3, "0": 9}))
        await pilot.pause()
        assert [str(k.value) for k in table._ordered_keys()] == ["0", "c"] and table.current_key == "c"


async def test_lines_painted_before_the_table_measured_its_rows_are_not_shown_again() -> None:
    # Given a table of fixed size (so measuring its rows does not resize it), painted (a screen
    # refresh) after rows arrived but before it measured them on idle
    app = FixedTableApp()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(KeyedTable)
        await pilot.pause()
        table.sync(rows({"a-long-row-name": 123456}))
        narrow = table.render_line(1).text  # the row, cut to the label-wide columns
        assert "a-long-row-name" not in narrow
        # When it measures them
        await pilot.pause()
        assert table.columns[ColumnKey("name")].content_width == len("a-long-row-name")
        # Then the row is painted again at the new widths, not served from the stale line cache
        assert "a-long-row-name" in table.render_line(1).text and "123456" in table.render_line(1).text


async def test_marks_follow_rows_not_positions() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(KeyedTable)
        table.sync(rows({"a": 1, "b": 2}))
        await pilot.pause()
        table.select_key("b")
        table.toggle_mark()
        table.sync(rows({"0": 0, "a": 1, "b": 2}))
        await pilot.pause()
        assert table.chosen() == ["b"]
        table.sync(rows({"0": 0, "a": 1}))
        assert table.marks == set()


@pytest.mark.parametrize(
    ("query", "facets", "hit"),
    [
        ("", Facets("anything"), True),
        ("emails", Facets("queue emails stalled"), True),
        ("queue:emails", Facets("x", queue="emails"), True),
        ("queue:emails", Facets("emails", queue="billing"), False),
        ("task:email.*", Facets("x", task="email.send"), True),
        ("task:email.*", Facets("x", task="xemail.send"), False),
        ("state:stuck !billing", Facets("billing", state="stuck"), False),
        ("STATE:Stuck", Facets("x", state="stuck active"), True),
        ("state:stuck", Facets("x"), False),
        ("weird:colon", Facets("a weird:colon b"), True),
    ],
)
def test_filter_grammar(query: str, facets: Facets, hit: bool) -> None:
    assert FilterQuery.parse(query).matches(facets) is hit


def test_sparkline_scales_and_marks_unknown() -> None:
    assert sparkline([0, 5, 10], width=4) == " ▁▅█"
    assert sparkline([None, 0.0], width=2) == " ▁"
    assert sparkline([1, 2], width=2, ascii_only=True) == "=#"


def test_literal_neutralises_controls_and_never_parses_markup() -> None:
    text = literal("\x1b[2J[bold]x[/bold]\x07", limit=None)
    assert text.plain == "\\x1b[2J[bold]x[/bold]\\x07" and not text.spans
    assert clean("a" * 60, 10) == "a" * 9 + "…"
    assert clean(None) == "-"


async def test_event_log_names_what_changed(store, clock: FrozenClock) -> None:
    url, ns = store
    scene = await seed(url, ns, clock)
    source = DataSource(lambda: _pair(url, ns), clock=clock, live=False)
    log = EventLog()
    first = await source.fetch()
    log.observe(first)
    assert [e.kind for e in log.events] == ["broker"]
    # When a worker goes silent, a queue gets a new dead letter and an action is audited
    from tests.tui.seed import claim, heartbeat

    await scene.backend.set_heartbeat(heartbeat("w-1", ["emails"], clock, age=120, namespace=ns))
    [delivery] = await claim(scene.broker, "exports", "w-x", 1)
    await scene.broker.dead_letter(delivery, reason="boom")
    assert source.ops is not None
    await source.ops.purge("media", dry_run=False, reason="cleanup")
    clock.advance(5)
    log.observe(await source.fetch())
    texts = [e.text for e in log.events]
    assert any("worker w-1 went silent" in t for t in texts)
    assert any("+1 dead letter(s) in exports" in t for t in texts)
    assert any(t.startswith("tester@host purge") or "purge" in t and "cleanup" in t for t in texts)
    log.failed(clock(), "connection refused")
    log.failed(clock(), "connection refused")  # one event per outage, not per poll
    assert [e.kind for e in log.events].count("broker") == 2
    await source.close()
    await scene.close()


async def _pair(url: str, ns: str) -> tuple[Broker, ResultBackend]:
    return await connect_broker(url, namespace=ns), await connect_backend(url, namespace=ns)


async def test_a_poll_reads_only_what_the_view_wants(store, clock: FrozenClock) -> None:
    # Given the seeded scene (leases in emails and reports, dead letters in billing)
    url, ns = store
    scene = await seed(url, ns, clock)
    source = DataSource(lambda: _pair(url, ns), clock=clock, live=False)
    # When the default view (Queues) polls, Then only the overview, workers and audit are read
    assert Want() == Want(view="queues", queue=None, state="pending", offset=0)
    snap = await source.fetch()
    assert snap.want == Want() and (snap.leases, snap.detail, snap.dead) == (None, None, None)
    assert {q.queue for q in snap.overview.queues} >= {"emails", "billing"} and snap.workers
    # When another view wants its extra part, Then that part alone is read
    source.want = Want(view="leases")
    snap = await source.fetch()
    assert snap.leases is not None and {lease.queue for lease in snap.leases} == {"emails", "reports"}
    assert (snap.detail, snap.dead) == (None, None)
    source.want = Want(view="detail", queue="billing", state="dead")
    snap = await source.fetch()
    assert snap.detail is not None and snap.detail.queue == "billing" and len(snap.detail.messages) == 3
    assert (snap.leases, snap.dead) == (None, None)
    source.want = Want(view="dead")
    snap = await source.fetch()
    assert snap.dead is not None and {e["queue"] for e in snap.dead} == {"billing"} and len(snap.dead) == 3
    assert (snap.leases, snap.detail) == (None, None)
    # and the dead letters of every queue that has some, newest first
    from tests.tui.seed import claim

    clock.advance(5)
    [delivery] = await claim(scene.broker, "exports", "w-x", 1)
    await scene.broker.dead_letter(delivery, reason="boom")
    snap = await source.fetch()
    assert snap.dead is not None and [e["queue"] for e in snap.dead] == ["exports"] + ["billing"] * 3
    # And a queue that vanished is a note, not a failed poll
    source.want = Want(view="detail", queue="nope")
    snap = await source.fetch()
    assert snap.detail is None and "nope" in snap.notes["detail"]
    await source.close()
    await scene.close()


async def test_the_explain_panel_fix_lines_paste_as_one_word_per_value(store) -> None:
    # Given a delayed task whose id is a shell command (issue 15)
    import shlex

    from stem_core.ops import Ops
    from stem_tui.dialogs.panels import explanation_text

    url, ns = store
    task = "x; touch /tmp/PWNED #$(id)`id`'"
    broker, backend = await connect_broker(url, namespace=ns), await connect_backend(url, namespace=ns)
    try:
        ops = Ops(broker, backend, actor="t", persist_rates=False)
        await ops.enqueue("ok", {}, queue="q", task_id=task, delay=3600)
        shown = explanation_text(await ops.explain(task)).plain
    finally:
        await broker.close()
        await backend.close()
    # Then every "fix:" line splits into the words meant, the id whole
    fixes = [shlex.split(line.split("fix:", 1)[1], comments=True) for line in shown.splitlines() if "fix:" in line]
    assert ["stem", "requeue", "q", "--id", task] in fixes
    assert all(words[0] == "stem" and "touch" not in words for words in fixes)
