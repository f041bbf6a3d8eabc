"""Pictures of every view and every dialog of ``stem tui`` at 80x24 and 160x48, on the
seeded memory scene at a frozen time (``tests/tui/seed.py``), plus hostile strings shown
literally. A difference means the screen changed: look at the report, then accept it
with ``--snapshot-update`` only if the change is wanted."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest

from stem_core import Broker, ResultBackend
from stem_core.errors import BrokerUnavailable
from stem_tui.app import StemTui
from stem_tui.source import DataSource
from tests.tui.helpers import settle
from tests.tui.seed import FrozenClock, claim, envelope, make_app, poll, seed, task_id

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
LABEL = "memory://snapshots"
# Polls taken before each picture, the clock moved between them, with tasks flowing.
POLLS = 5
POLL_GAP_S = 5.0


def scene_app(store: tuple[str, str], clock: FrozenClock, **options: Any) -> StemTui:
    url, ns = store
    app = make_app(url, ns, clock, label=LABEL, **options)
    # No animations: a picture taken while the tabs' underline still slides (a loaded box
    # is slow to finish it) differs from the settled one (CI flake at 160x48).
    app.animation_level = "none"
    return app


def steps(store: tuple[str, str], clock: FrozenClock, *keys: str, hostile: bool = False,
          select: str | None = None, then: Callable[[Any], Awaitable[None]] | None = None) -> Callable[[Any], Awaitable[None]]:
    """run_before: seed, poll with work flowing (rates and sparklines fill), then keys."""
    url, ns = store

    async def run_before(pilot: Any) -> None:
        scene = await seed(url, ns, clock, hostile=hostile)
        for n in range(POLLS):
            if n:
                await scene.broker.publish_many([envelope(200 + 10 * n + i, "thumb.make", "default", clock, age=1)
                                                 for i in range(n + 1)])
                for delivery in await claim(scene.broker, "default", "w-1", n):
                    await scene.broker.ack(delivery)
            await poll(pilot, advance=POLL_GAP_S if n else 0.0)
        clock.advance(3)  # the footer says the data is 3 s old
        if select is not None:
            view = pilot.app.active_view()
            await settle(pilot)
            view.main_table().select_key(select)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        if then is not None:
            await then(pilot)
        pilot.app.tick_age()
        await settle(pilot)
        await scene.close()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_queues(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, select="emails"))


@pytest.mark.parametrize("size", SIZES)
def test_queue_detail(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size,
                        run_before=steps(store, clock, "enter", "t", "t", select="emails"))


@pytest.mark.parametrize("size", SIZES)
def test_queue_detail_dead(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size,
                        run_before=steps(store, clock, "enter", "T", select="billing"))


@pytest.mark.parametrize("size", SIZES)
def test_leases(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "2", "down", "down"))


@pytest.mark.parametrize("size", SIZES)
def test_workers(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "3"))


@pytest.mark.parametrize("size", SIZES)
def test_dead_letters(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "4"))


@pytest.mark.parametrize("size", SIZES)
def test_events(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "5"))


@pytest.mark.parametrize("size", SIZES)
def test_confirm_purge(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "X", select="exports"))


@pytest.mark.parametrize("size", SIZES)
def test_confirm_requeue_stuck(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size,
                        run_before=steps(store, clock, "2", "S", select=None))


@pytest.mark.parametrize("size", SIZES)
def test_pause_form(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "P", select="emails"))


@pytest.mark.parametrize("size", SIZES)
def test_enqueue_form(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "N"))


@pytest.mark.parametrize("size", SIZES)
def test_broadcast_form(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "3", "b"))


@pytest.mark.parametrize("size", SIZES)
def test_explain(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    async def explain_stuck(pilot: Any) -> None:
        pilot.app.active_view().main_table().select_key(f"reports\x00{task_id(21)}")
        await pilot.press("e")
        await settle(pilot)

    assert snap_compare(scene_app(store, clock), terminal_size=size,
                        run_before=steps(store, clock, "2", then=explain_stuck))


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "question_mark"))


@pytest.mark.parametrize("size", SIZES)
def test_filter(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    async def type_filter(pilot: Any) -> None:
        await pilot.press("slash", *"state:no-workers")
        await settle(pilot)

    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, then=type_filter))


@pytest.mark.parametrize("size", SIZES)
def test_read_only(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock, read_only=True), terminal_size=size, run_before=steps(store, clock))


@pytest.mark.parametrize("size", SIZES)
def test_low_colour(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock, low_colour=True), terminal_size=size, run_before=steps(store, clock))


@pytest.mark.parametrize("size", SIZES)
def test_broker_down_banner(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    async def refused() -> tuple[Broker, ResultBackend]:
        raise BrokerUnavailable("cannot reach the broker at redis://db.internal:6379: connection refused")

    app = StemTui(DataSource(refused, label="redis://db.internal:6379", clock=clock, live=False), blink=False)
    app.animation_level = "none"

    async def run_before(pilot: Any) -> None:
        await poll(pilot)
        await poll(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_hostile_strings_render_literally(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size,
                        run_before=steps(store, clock, "enter", hostile=True, select="emails"))


@pytest.mark.parametrize("size", SIZES)
def test_command_palette(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    async def open_palette(pilot: Any) -> None:
        await pilot.press("colon")
        await settle(pilot)
        for widget in pilot.app.screen.query("Input"):
            widget.cursor_blink = False
        await pilot.press(*"req")
        await settle(pilot)

    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, then=open_palette))


@pytest.mark.parametrize("size", SIZES)
def test_control_replies(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    from stem_core.ops import ActionDetail, ActionResult
    from stem_tui.dialogs.panels import PanelDialog, result_text

    result = ActionResult("broadcast", False, 1, [{"worker_id": "w-1", "ok": True, "result": {"pid": 4242, "host": "ops-box"}}],
                          detail=ActionDetail(missing=["w-2"], replies_from=["w-1"]), ok=False)

    async def show(pilot: Any) -> None:
        pilot.app.push_screen(PanelDialog("Broadcast ping to every live worker",
                                          result_text(result, "stem broadcast ping --timeout 5s")))
        await settle(pilot)

    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=steps(store, clock, "3", then=show))


def schedule_steps(store: tuple[str, str], clock: FrozenClock, *keys: str) -> Callable[[Any], Awaitable[None]]:
    """run_before for the Schedules view: the scene plus stored schedules, then ``6``."""
    url, ns = store
    inner = steps(store, clock, "6", *keys)

    async def run_before(pilot: Any) -> None:
        from stem_core import connect_backend
        from tests.tui.seed import seed_schedules

        backend = await connect_backend(url, namespace=ns)
        try:
            await seed_schedules(backend, clock)
        finally:
            await backend.close()
        await inner(pilot)
        await poll(pilot)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_schedules(snap_compare: Any, store: Any, clock: FrozenClock, size: tuple[int, int]) -> None:
    assert snap_compare(scene_app(store, clock), terminal_size=size, run_before=schedule_steps(store, clock, "down"))
