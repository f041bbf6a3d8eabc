"""The Schedules view end to end on the memory store: keys -> the audited ops call (the
same as ``stem schedule pause|resume|run-now``) -> the schedule changed -> one audit
record; read-only mode refuses them."""

from __future__ import annotations

from stem_core import connect_backend
from stem_core.schedules import ScheduleBook
from tests.tui.helpers import audit_actions, make_app, press, settle, started, table_keys
from tests.tui.seed import FrozenClock, poll, seed_schedules

SIZE = (120, 40)


async def schedules_shown(pilot, url: str, ns: str, clock: FrozenClock) -> None:  # type: ignore[no-untyped-def]
    await started(pilot, url, ns, clock)
    backend = await connect_backend(url, namespace=ns)
    try:
        await seed_schedules(backend, clock)
    finally:
        await backend.close()
    await press(pilot, "6")
    await poll(pilot)
    await settle(pilot)


async def stored(url: str, ns: str, schedule_id: str):  # type: ignore[no-untyped-def]
    backend = await connect_backend(url, namespace=ns)
    try:
        return await ScheduleBook(backend).get(schedule_id)
    finally:
        await backend.close()


async def test_pause_resume_and_run_now(store, clock: FrozenClock) -> None:
    # Given the Schedules view with four stored schedules
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await schedules_shown(pilot, url, ns, clock)
        assert table_keys(app) == ["cleanup.tick", "crm.sync", "launch", "nightly-report"]
        view = app.active_view()
        view.main_table().select_key("cleanup.tick")
        await settle(pilot)
        # When the operator pauses it, then resumes it, then runs it now
        await press(pilot, "s")
        assert (await stored(url, ns, "cleanup.tick")).paused is True
        await press(pilot, "u")
        assert (await stored(url, ns, "cleanup.tick")).paused is False
        await press(pilot, "n")
        # Then each was one audited ops call, by the TUI's actor
        records = await audit_actions(url, ns)
        assert [r["action"] for r in records[:3]] == ["schedule-run-now", "schedule-resume", "schedule-pause"]
        assert {r["actor"] for r in records[:3]} == {"tester@tui"}
        assert records[0]["arguments"] == {"id": "cleanup.tick", "command": "stem schedule run-now cleanup.tick"}
        ran = await stored(url, ns, "cleanup.tick")
        assert records[0]["result"]["ids"] == [ran.last_task_id]


async def test_read_only_refuses_schedule_actions(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await schedules_shown(pilot, url, ns, clock)
        app.active_view().main_table().select_key("crm.sync")
        await settle(pilot)
        await press(pilot, "u", "n")
        assert (await stored(url, ns, "crm.sync")).paused is True
        assert not [r for r in await audit_actions(url, ns) if r["action"].startswith("schedule-")]
