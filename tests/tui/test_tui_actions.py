"""Every TUI action end to end on the memory broker: keys -> preview -> confirmation ->
the state changed in the store -> one audit record. Given/When/Then in each body."""

from __future__ import annotations

import asyncio

from stem_core import Stem, Worker
from stem_core.control.pause import paused_queues
from tests.support import eventually
from tests.tui.helpers import audit_actions, counts, make_app, press, settle, started, store_ops, table_keys
from tests.tui.seed import FrozenClock, heartbeat, poll, task_id

from stem_tui.dialogs.confirm import ConfirmDialog
from stem_tui.dialogs.forms import BroadcastDialog, EnqueueDialog, PauseDialog
from stem_tui.dialogs.panels import PanelDialog

SIZE = (120, 40)


async def select_row(pilot, key: str) -> None:  # type: ignore[no-untyped-def]
    view = pilot.app.active_view()
    view.main_table().select_key(key)
    await settle(pilot)


async def confirm(pilot, reason: str = "") -> None:  # type: ignore[no-untyped-def]
    assert isinstance(pilot.app.screen, ConfirmDialog), f"expected a confirmation, got {pilot.app.screen!r}"
    if reason:
        await pilot.click("#reason")
        await pilot.press(*reason)
    await pilot.click("#confirm")
    await settle(pilot)


async def test_requeue_stuck_leases_from_the_leases_view(store, clock: FrozenClock) -> None:
    # Given a lease held by a worker with no heartbeat (reports) in the Leases view
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await press(pilot, "2")
        await select_row(pilot, f"reports\x00{task_id(21)}")
        # When the operator asks to requeue the stuck leases and confirms with a reason
        await press(pilot, "S")
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert dialog.preview.count == 1
        assert "stem requeue reports --expired-leases" in dialog.command
        await confirm(pilot, reason="w-gone died")
        # Then the message is pending again, the audit log says who did it and why
        assert await counts(url, ns, "reports") == {"pending": 4, "delayed": 0, "inflight": 0, "dead": 0}
        record = (await audit_actions(url, ns))[0]
        assert (record["action"], record["actor"], record["reason"]) == ("requeue", "tester@tui", "w-gone died")
        assert record["result"]["ids"] == [task_id(21)]
        # and the lease is gone from the view after the refresh the action triggered
        assert f"reports\x00{task_id(21)}" not in table_keys(app)


async def test_the_confirmation_acts_on_the_frozen_preview_only(store, clock: FrozenClock) -> None:
    # Given the preview found one stuck lease
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        scene = await started(pilot, url, ns, clock)
        await press(pilot, "2")
        await select_row(pilot, f"reports\x00{task_id(21)}")
        await press(pilot, "S")
        assert isinstance(app.screen, ConfirmDialog) and app.screen.preview.count == 1
        # When its holder comes back to life before the operator confirms
        await scene.backend.set_heartbeat(heartbeat("w-gone", ["reports"], clock, namespace=ns))
        await confirm(pilot)
        # Then nothing is requeued: the set can shrink, never widen
        assert (await counts(url, ns, "reports"))["inflight"] == 1
        assert (await audit_actions(url, ns))[0]["result"]["count"] == 0
        await scene.close()


async def test_cancelling_a_confirmation_changes_nothing(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await select_row(pilot, "exports")
        await press(pilot, "X")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.click("#cancel")
        await settle(pilot)
        assert (await counts(url, ns, "exports"))["pending"] == 4
        assert await audit_actions(url, ns) == []


async def test_purge_from_the_queues_view(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await select_row(pilot, "exports")
        await press(pilot, "X")
        assert app.screen.preview.count == 4  # type: ignore[attr-defined]
        assert "stem purge exports" in app.screen.command  # type: ignore[attr-defined]
        await confirm(pilot)
        assert (await counts(url, ns, "exports"))["pending"] == 0
        assert (await audit_actions(url, ns))[0]["action"] == "purge"


async def test_replay_and_purge_dead_letters(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        # When one marked dead letter is replayed from the Dead letters view
        await press(pilot, "4")
        await select_row(pilot, f"billing\x00{task_id(102)}")
        await press(pilot, "space", "R")
        assert app.screen.preview.count == 1  # type: ignore[attr-defined]
        await confirm(pilot)
        # Then it is pending again and two stay dead
        assert await counts(url, ns, "billing") == {"pending": 1, "delayed": 0, "inflight": 0, "dead": 2}
        assert (await audit_actions(url, ns))[0]["result"]["ids"] == [task_id(102)]
        # When the rest are purged from the Queues view
        await press(pilot, "1")
        await select_row(pilot, "billing")
        await press(pilot, "D")
        assert app.screen.preview.count == 2  # type: ignore[attr-defined]
        await confirm(pilot)
        assert (await counts(url, ns, "billing"))["dead"] == 0
        assert (await audit_actions(url, ns))[0]["action"] == "purge-dead"


async def test_requeue_and_remove_from_queue_detail(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        # Given the in-flight tab of emails
        await select_row(pilot, "emails")
        await press(pilot, "enter", "t", "t")
        assert app.active_view().state == "inflight"  # type: ignore[union-attr]
        assert set(table_keys(app)) == {task_id(1), task_id(2)}
        # When one lease is requeued
        await select_row(pilot, task_id(1))
        await press(pilot, "R")
        await confirm(pilot)
        assert (await counts(url, ns, "emails"))["inflight"] == 1
        # And two pending messages are marked and removed
        await press(pilot, "T", "T")
        assert app.active_view().state == "pending"  # type: ignore[union-attr]
        await select_row(pilot, task_id(3))
        await press(pilot, "space", "down", "space", "X")
        assert app.screen.preview.count == 2  # type: ignore[attr-defined]
        await confirm(pilot)
        assert (await counts(url, ns, "emails"))["pending"] == 4
        actions = [r["action"] for r in await audit_actions(url, ns)]
        assert actions[:2] == ["remove", "requeue"]


async def test_pause_and_resume(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        scene = await started(pilot, url, ns, clock)
        # When emails is paused with a reason
        await select_row(pilot, "emails")
        await press(pilot, "P")
        assert isinstance(app.screen, PauseDialog)
        await pilot.press(*"hotfix")
        await pilot.click("#submit")
        await settle(pilot)
        # Then the pause is persisted with who and why, and the row says so
        pauses = await paused_queues(scene.backend)
        assert pauses["emails"]["reason"] == "hotfix" and pauses["emails"]["by"] == "tester@tui"
        await poll(pilot)
        # When the paused media queue is resumed (not destructive: no confirmation)
        await select_row(pilot, "media")
        await press(pilot, "P")
        assert "media" not in await paused_queues(scene.backend)
        assert [r["action"] for r in await audit_actions(url, ns)][:2] == ["resume", "pause"]
        await scene.close()


async def test_enqueue_from_the_form(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        await press(pilot, "N")
        assert isinstance(app.screen, EnqueueDialog)
        await pilot.press(*"report.build")
        await pilot.click("#args")
        await pilot.press(*'{"id": 99}')
        await pilot.click("#queue")
        await pilot.press(*"reports")
        # a bad priority is one line in the form, not a traceback
        await pilot.click("#priority")
        await pilot.press(*"high")
        await pilot.click("#submit")
        await settle(pilot)
        assert isinstance(app.screen, EnqueueDialog)
        assert "priority" in str(app.screen.query_one("#form-error").render())
        app.screen.query_one("#priority").value = "7"  # type: ignore[attr-defined]
        await pilot.click("#priority")
        await pilot.press("enter")  # Enter in any field submits
        await settle(pilot)
        assert (await counts(url, ns, "reports"))["pending"] == 4
        record = (await audit_actions(url, ns))[0]
        assert record["action"] == "enqueue" and record["arguments"]["priority"] == 7


async def test_broadcast_ping_reaches_a_live_worker(store, clock: FrozenClock) -> None:
    # Given a real worker on the same store
    url, ns = store
    stem = Stem(broker=url, backend=url, namespace=ns)
    worker = Worker(stem, queues=["pings"], concurrency=1, worker_id="w-live")
    running = asyncio.create_task(worker.run())
    app = make_app(url, ns, clock)
    try:
        async with asyncio.timeout(30):
            await worker.ready.wait()
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot, url, ns, clock)
            # When the operator sends ping to that worker from the Workers view
            await press(pilot, "3")
            await select_row(pilot, "w-live")
            await press(pilot, "b")
            assert isinstance(app.screen, BroadcastDialog)
            await pilot.click("#submit")

            async def reply_shown() -> bool:
                await settle(pilot)
                return isinstance(app.screen, PanelDialog)

            await eventually(reply_shown, timeout=30, interval=0.05)  # the reply arrives over the broker
            # Then its reply is shown and the command is audited
            assert isinstance(app.screen, PanelDialog)
            assert "w-live" in str(app.screen.body)
            record = (await audit_actions(url, ns))[0]
            assert record["action"] == "broadcast" and record["result"]["replies_from"] == ["w-live"]
    finally:
        worker.request_stop("hard")
        await asyncio.wait_for(running, 30)
        await stem.close()


async def test_an_action_error_is_one_notification(store, clock: FrozenClock) -> None:
    url, ns = store
    app = make_app(url, ns, clock)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, url, ns, clock)
        from stem_tui.dialogs import plans

        app.start_plan(plans.purge("no-such-queue"))
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmDialog)
        messages = [n.message for n in app._notifications]
        assert any("unknown queue" in m for m in messages), messages
        ops = await store_ops(url, ns)
        assert await ops.audit_log() == []
