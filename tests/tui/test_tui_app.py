"""The app around the actions: views and navigation, filter, palette, help, read-only
mode, the broker-down banner, and literal rendering of hostile data."""

from __future__ import annotations

from typing import Any

from stem_core import Broker, ResultBackend, connect_backend, connect_broker
from stem_core.errors import BrokerUnavailable
from stem_tui.app import StemTui
from stem_tui.dialogs.confirm import ConfirmDialog
from stem_tui.dialogs.panels import ExplainDialog, PanelDialog
from stem_tui.screens import DeadView, DetailView, EventsView, LeasesView, QueuesView, WorkersView
from stem_tui.source import DataSource
from tests.tui.helpers import cell_text, make_app, press, settle, started, table_keys
from tests.tui.seed import HOSTILE_NAME, FrozenClock, poll, task_id

SIZE = (120, 40)
QUEUES = ["billing", "emails", "exports", "media", "reports", "scheduled"]


def footer_keys(app: StemTui) -> set[str]:
    return {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}


async def test_number_keys_switch_views_and_enter_opens_a_queue(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        assert isinstance(app.screen, QueuesView) and table_keys(app) == QUEUES
        for key, view in (("2", LeasesView), ("3", WorkersView), ("4", DeadView), ("5", EventsView), ("1", QueuesView)):
            await press(pilot, key)
            assert isinstance(app.screen, view), key
        await press(pilot, "2")
        assert set(table_keys(app)) == {f"emails\x00{task_id(1)}", f"emails\x00{task_id(2)}", f"reports\x00{task_id(21)}"}
        assert cell_text(app, f"reports\x00{task_id(21)}", "stuck") == "STUCK"
        await press(pilot, "3")
        assert table_keys(app) == ["w-1", "w-2"] and "STALE" in cell_text(app, "w-2", "beat")
        await press(pilot, "1")
        app.active_view().main_table().select_key("exports")  # type: ignore[union-attr]
        await press(pilot, "enter")
        assert isinstance(app.screen, DetailView) and app.screen.queue == "exports"
        assert table_keys(app) == [task_id(44), task_id(43), task_id(42), task_id(41)]  # oldest first
        await press(pilot, "escape")
        assert isinstance(app.screen, QueuesView)


async def test_detail_pages_forward_by_cursor_and_back_by_the_cursors_before(store, clock: FrozenClock) -> None:
    # Given exports with 114 pending messages: three pages of 50
    from tests.tui.seed import envelope

    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        scene = await started(pilot, url, ns, clock)
        await scene.broker.publish_many([envelope(1000 + i, "export.csv", "exports", clock, age=500 - i) for i in range(110)])
        order = [i.envelope.id for i in await scene.broker.peek("exports", limit=200)]
        assert len(order) == 114
        app.active_view().main_table().select_key("exports")  # type: ignore[union-attr]
        await press(pilot, "enter")
        await poll(pilot)
        assert isinstance(app.screen, DetailView) and table_keys(app) == order[:50]

        def title() -> str:
            return str(app.screen.query_one("#title-left").text)  # type: ignore[attr-defined]

        # When the operator pages forward, and ten messages of the first page go meanwhile
        await press(pilot, "right_square_bracket")
        await poll(pilot)
        assert table_keys(app) == order[50:100] and "page 2" in title()
        assert await scene.broker.remove("exports", set(order[:10])) == 10
        await poll(pilot, advance=5)
        # Then the page stays the one after the first page's last message (no offset shift)
        assert table_keys(app) == order[50:100]
        await press(pilot, "right_square_bracket")
        await poll(pilot)
        assert table_keys(app) == order[100:] and "page 3" in title()
        await press(pilot, "right_square_bracket")  # the last page: nothing after it
        await poll(pilot)
        assert table_keys(app) == order[100:] and "page 3" in title()
        # And going back returns to the page's own start, then to the top
        await press(pilot, "left_square_bracket")
        await poll(pilot)
        assert table_keys(app) == order[50:100] and "page 2" in title()
        await press(pilot, "left_square_bracket")
        await poll(pilot)
        assert table_keys(app) == order[10:60] and "page 1" in title()
        await scene.close()


async def test_rows_update_in_place_and_queues_appear_in_order(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        scene = await started(pilot, url, ns, clock)
        table = app.active_view().main_table()  # type: ignore[union-attr]
        table.select_key("media")
        before = table.current_key
        # When a message is added to exports and a new queue appears
        from tests.tui.seed import envelope

        await scene.broker.publish(envelope(500, "export.csv", "exports", clock, age=1))
        await scene.broker.publish(envelope(501, "a.task", "audit", clock, age=1))
        await poll(pilot, advance=5)
        # Then exports' cell changed, the new queue sits in name order, the cursor stayed
        assert cell_text(app, "exports", "pending") == "5"
        assert table_keys(app) == ["audit", *QUEUES]
        assert table.current_key == before == "media"
        await scene.close()


async def test_filter_with_qualifiers(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await press(pilot, "slash")
        await pilot.press(*"state:no-workers", "enter")
        await settle(pilot)
        assert table_keys(app) == ["exports"]
        assert "filter: state:no-workers" in app.screen.query_one("#title-left").text  # type: ignore[attr-defined]
        await press(pilot, "2")  # the filter follows to other views
        assert table_keys(app) == []
        await press(pilot, "slash")
        app.screen.query_one("#filter-bar").value = ""  # type: ignore[attr-defined]
        await pilot.press(*"queue:rep*", "enter")
        await settle(pilot)
        assert table_keys(app) == [f"reports\x00{task_id(21)}"]
        await press(pilot, "escape")
        assert len(table_keys(app)) == 3


async def test_help_palette_explain(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, PanelDialog) and "Purge" in str(app.screen.body)
        await press(pilot, "escape")
        # every binding of the view and of the app is a palette command, plus the queues
        names = [name for name, _, _ in app.palette_commands()]
        for expected in ("Purge (X)", "Refresh (r)", "Quit (q)", "Leases (2)", "open queue reports"):
            assert expected in names
        await press(pilot, "2")
        app.active_view().main_table().select_key(f"reports\x00{task_id(21)}")  # type: ignore[union-attr]
        await press(pilot, "e")
        assert isinstance(app.screen, ExplainDialog)
        text = str(app.screen.body)
        assert "dead-holder" in text and "w-gone" in text


async def test_palette_runs_a_command(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await press(pilot, "colon")
        await pilot.press(*"Workers")
        await settle(pilot)
        await press(pilot, "enter")
        assert isinstance(app.screen, WorkersView)


async def test_read_only_hides_and_refuses_every_action(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        assert not footer_keys(app) & {"X", "D", "S", "A", "P"}
        names = " ".join(name for name, _, _ in app.palette_commands())
        assert "Purge" not in names and "Enqueue" not in names and "Refresh" in names
        await press(pilot, "X", "N", "b", "P")
        assert isinstance(app.screen, QueuesView)
        await press(pilot, "2", "S")
        assert isinstance(app.screen, LeasesView)
        from stem_tui.dialogs import plans

        app.start_plan(plans.purge("exports"))
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmDialog)
        assert "READ-ONLY" in app.screen.query_one("#title-left").text  # type: ignore[attr-defined]
        from tests.tui.helpers import audit_actions, counts

        assert (await counts(url, ns, "exports"))["pending"] == 4 and await audit_actions(url, ns) == []


async def test_banner_while_the_broker_is_unreachable(store, clock: FrozenClock) -> None:
    # Given a broker that refuses the first two connections
    url, ns = store
    healthy: list[bool] = []

    async def flaky() -> tuple[Broker, ResultBackend]:
        if not healthy:
            raise BrokerUnavailable("cannot reach the broker at redis://db:6379: connection refused")
        return await connect_broker(url, namespace=ns), await connect_backend(url, namespace=ns)

    source = DataSource(flaky, label="redis://db:6379", clock=clock, live=False)
    app = StemTui(source, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        # Then the banner says so, with the retry, and the app still answers keys
        banner = app.screen.query_one("#banner")
        assert banner.display and "BROKER UNREACHABLE" in banner.text and "connection refused" in banner.text  # type: ignore[attr-defined]
        await press(pilot, "2")
        assert isinstance(app.screen, LeasesView)
        await press(pilot, "r")
        assert app.screen.query_one("#banner").display
        # When the broker comes back, the banner goes and the data shows
        healthy.append(True)
        await poll(pilot)
        assert not app.screen.query_one("#banner").display
        kinds = [e.kind for e in app.events.events]
        assert kinds[0] == "broker" and "recovered" in kinds


async def test_broker_lost_mid_session_keeps_the_last_data(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        ops = app.source.ops
        assert ops is not None

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise BrokerUnavailable("connection reset by peer")

        ops.broker.queue_stats = down  # type: ignore[method-assign]
        await poll(pilot, advance=40)
        assert "connection reset" in app.screen.query_one("#banner").text  # type: ignore[attr-defined]
        assert table_keys(app) == QUEUES  # the last data stays on screen
        assert "40s ago" in app.screen.query_one("#age").text  # type: ignore[attr-defined]


async def test_hostile_text_is_shown_literally_and_inert(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock, hostile=True)
        app.active_view().main_table().select_key("emails")  # type: ignore[union-attr]
        await press(pilot, "enter")
        name = cell_text(app, task_id(3), "task")
        assert "\x1b" not in name and name.startswith("\\x1b[31mred\\x1b[0m[bold]loud[/bold][@click=app.")
        await pilot.click("#table-pending", offset=(20, 2))  # a click on the cell must not run app.quit
        await settle(pilot)
        assert app.is_running
        panel = str(app.screen.query_one("#panel-body").render())
        assert "\\u001b]0;pwned\\u0007" in panel and "\\u202e" in panel and HOSTILE_NAME not in panel
        assert "[bold]loud[/bold][@click=app.quit]" in panel


async def test_refresh_interval_and_pausing_updates(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await press(pilot, "plus")
        assert app.source.interval == 5.0 and "every 5s" in app.screen.query_one("#title-right").text  # type: ignore[attr-defined]
        await press(pilot, "minus", "minus")
        assert app.source.interval == 1.0
        await press(pilot, "p")
        assert app.source.paused and "PAUSED" in app.screen.query_one("#age").text  # type: ignore[attr-defined]
        await press(pilot, "p")
        assert not app.source.paused


async def test_a_read_that_fails_on_a_server_that_answers_is_not_called_unreachable(clock: FrozenClock) -> None:
    # Given servers that answer but a read that fails (a refused value, a bad record)
    async def refused() -> tuple[Broker, ResultBackend]:
        raise ValueError("invalid queue name 'a b' in a record")

    app = StemTui(DataSource(refused, label="redis://db:6379", clock=clock, live=False), blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await poll(pilot)
        await settle(pilot)
        # Then the banner says the refresh failed, with the reason, and blames no network
        banner = app.screen.query_one("#banner").text  # type: ignore[attr-defined]
        assert "REFRESH FAILED" in banner and "invalid queue name" in banner and "UNREACHABLE" not in banner


async def test_the_header_and_banner_never_show_a_url_secret(store, clock: FrozenClock) -> None:
    # Given a broker URL with a password and secret query parameters, and a driver whose
    # error message quotes the URL whole
    from stem_core.settings import load_settings

    secret, query_secret = "SentinelTuiPw31", "SentinelTuiQuery32"
    broker = f"postgresql://ann:{secret}@db.example:5432/jobs?sslpassword={query_secret}&sslmode=require"
    settings = load_settings(broker=broker, backend=f"redis://:{secret}@cache/0?token={query_secret}", env={})
    source = DataSource.from_settings(settings, clock=clock, live=False)

    async def leaky() -> tuple[Broker, ResultBackend]:
        raise BrokerUnavailable(f"driver failed for {broker} (password {secret}, key {query_secret})")

    source._connect = leaky
    app = StemTui(source, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await poll(pilot)
        await settle(pilot)
        # Then the header names the server, and neither it nor the banner shows a secret
        header = app.screen.query_one("#title-right").text  # type: ignore[attr-defined]
        banner = app.screen.query_one("#banner").text  # type: ignore[attr-defined]
        assert "db.example" in header and "sslpassword=***" in header
        assert "BROKER UNREACHABLE" in banner
        for text in (header, banner, app.context_line()):
            assert secret not in text and query_secret not in text
