"""Ops actions on the memory adapter: dry runs change nothing, real runs act and append one
audit record each (failures included)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, Stem, TaskState
from stem_core.clock import utcnow
from stem_core.control.pause import paused_queues
from stem_core.errors import StemError, Unsupported
from stem_core.ops import Ops
from stem_core.ops.audit import AUDIT_LIST_MAX_ITEMS, AUDIT_VALUE_MAX_CHARS, default_actor
from stem_core.worker import Worker
from tests.cli.helpers import claim, heartbeat, inflight_entry, open_memory
from tests.support import eventually
from tests.worker.helpers import start


@pytest.fixture
async def env(namespace: str) -> AsyncIterator[tuple[Ops, Any, Any]]:
    ops, broker, backend, _ = await open_memory(namespace, stale_after=5.0)
    yield ops, broker, backend
    await broker.close()
    await backend.close()


async def enqueue_n(ops: Ops, n: int, queue: str = "q", **kw: Any) -> list[str]:
    result = await ops.enqueue_many([("t.work", {"i": i}, {"queue": queue, **kw}) for i in range(n)])
    return result.detail.ids


async def stats(broker: Any, queue: str = "q") -> Any:
    return (await broker.queue_stats([queue]))[0]


async def test_requeue_stuck_leases_previews_then_acts_and_audits(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    # Given 2 leases held by a dead worker and 1 by a live one
    await enqueue_n(ops, 3)
    dead = await claim(broker, ["q"], "dead", 2)
    live = await claim(broker, ["q"], "live", 1)
    await backend.set_heartbeat(heartbeat("dead", ["q"], age=60, inflight=[inflight_entry(d) for d in dead]))
    await backend.set_heartbeat(heartbeat("live", ["q"], inflight=[inflight_entry(live[0])]))
    # When previewed
    preview = await ops.requeue("q", stuck_leases=True, dry_run=True)
    # Then it counts the dead worker's leases only and changes nothing
    assert preview.dry_run and preview.count == 2 and sorted(preview.detail.ids) == sorted(d.envelope.id for d in dead)
    assert {s["holder"] for s in preview.sample} == {"dead"} and (await stats(broker)).inflight == 3
    assert [r["action"] for r in await backend.list_audit()] == ["enqueue"]
    # When run for real
    done = await ops.requeue("q", stuck_leases=True, reason="worker box died")
    # Then they are pending again, the live lease is untouched, and one audit record says so
    s = await stats(broker)
    assert done.count == 2 and not done.dry_run and (s.pending, s.inflight) == (2, 1)
    record = (await backend.list_audit())[0]
    assert record["id"] == done.audit_id and record["action"] == "requeue" and record["actor"] == "tester@host"
    assert record["reason"] == "worker box died" and record["result"]["count"] == 2 and record["ok"] is True
    assert record["arguments"]["stuck_leases"] is True


async def test_requeue_with_previewed_ids_never_widens_the_set(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await enqueue_n(ops, 2)
    first, second = await claim(broker, ["q"], "dead", 2)
    await backend.set_heartbeat(heartbeat("dead", ["q"], age=60))
    # only the first was previewed; the second became stuck too, but was not confirmed
    done = await ops.requeue("q", stuck_leases=True, ids=[first.envelope.id])
    assert done.count == 1 and done.detail.ids == [first.envelope.id]
    assert (await stats(broker)).inflight == 1


async def test_requeue_by_id_makes_a_delayed_message_ready(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    (task,) = await enqueue_n(ops, 1, delay=3600)
    preview = await ops.requeue("q", ids=[task, "not-there"], dry_run=True)
    assert preview.count == 1 and preview.sample[0]["state"] == "delayed"
    assert (await ops.requeue("q", ids=[task])).count == 1
    s = await stats(broker)
    assert (s.pending, s.delayed) == (1, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "say what to requeue"),
        ({"ids": ["x"], "delay": 5}, "delay applies to dead letters"),
        ({"stuck_leases": True, "task": "t"}, "task and since filter dead letters"),
        ({"stuck_leases": True, "dead": True}, "not both"),
        ({"ids": ["x"], "limit": 0}, "limit must be"),
    ],
)
async def test_requeue_rejects_unclear_requests(env: tuple[Ops, Any, Any], kwargs: dict, message: str) -> None:
    ops, _, _ = env
    await enqueue_n(ops, 1)
    with pytest.raises(ValueError, match=message):
        await ops.requeue("q", **kwargs)


async def test_replay_dead_letters_filtered_by_task(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await ops.enqueue_many([("t.a", {}, {"queue": "q"}), ("t.b", {}, {"queue": "q"}), ("t.a", {}, {"queue": "q"})])
    for delivery in await claim(broker, ["q"], "w", 3):
        await broker.dead_letter(delivery, reason="boom")
    preview = await ops.requeue("q", dead=True, task="t.a", dry_run=True)
    assert preview.count == 2 and {s["name"] for s in preview.sample} == {"t.a"} and (await stats(broker)).dead == 3
    done = await ops.replay("q", task="t.a", since=utcnow() - timedelta(hours=1))
    s = await stats(broker)
    assert done.count == 2 and (s.pending, s.dead) == (2, 1)
    assert (await backend.list_audit())[0]["action"] == "replay"


async def test_purge_counts_pending_and_delayed_and_keeps_leases(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await enqueue_n(ops, 3)
    await enqueue_n(ops, 2, delay=600)
    await claim(broker, ["q"], "w", 1)
    preview = await ops.purge("q", dry_run=True)
    assert preview.count == 4 and preview.detail.inflight_kept == 1 and (await stats(broker)).pending == 2
    done = await ops.purge("q")
    s = await stats(broker)
    assert done.count == 4 and (s.pending, s.delayed, s.inflight) == (0, 0, 1)
    assert (await backend.list_audit())[0]["action"] == "purge"


async def test_purge_dead_letters_since(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    await enqueue_n(ops, 3)
    for delivery in await claim(broker, ["q"], "w", 3):
        await broker.dead_letter(delivery, reason="boom")
    assert (await ops.purge("q", dead=True, since=utcnow() + timedelta(hours=1), dry_run=True)).count == 0
    assert (await ops.purge("q", dead=True, limit=2, dry_run=True)).count == 2
    assert (await ops.purge("q", dead=True, since=utcnow() - timedelta(hours=1), dry_run=True)).count == 3
    assert (await ops.purge("q", dead=True)).count == 3 and (await stats(broker)).dead == 0
    with pytest.raises(ValueError, match="apply to dead letters"):
        await ops.purge("q", limit=3)


async def test_remove_by_id(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    ids = await enqueue_n(ops, 3)
    assert (await ops.remove("q", [ids[0], "nope"], dry_run=True)).count == 1
    assert (await ops.remove("q", [ids[0]])).count == 1 and (await stats(broker)).pending == 2


async def test_a_preview_by_id_stops_reading_once_every_id_is_found(
    env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ops, broker, _ = env
    ids = await enqueue_n(ops, 1200)  # pending pages of 500: the first holds the id
    states: list[str] = []

    def spying(real: Any) -> Any:
        async def spy(queue: str, *, state: str, **kw: Any) -> Any:
            states.append(state)
            return await real(queue, state=state, **kw)
        return spy

    # Pages are read by offset (in flight) or by cursor (delayed, pending): count both.
    monkeypatch.setattr(broker, "peek", spying(broker.peek))
    monkeypatch.setattr(broker, "peek_page", spying(broker.peek_page))
    assert (await ops.remove("q", [ids[0]], dry_run=True)).count == 1
    assert states == ["inflight", "delayed", "pending"]


async def test_pause_and_resume_without_live_workers_are_persisted(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    await enqueue_n(ops, 1)
    preview = await ops.pause(["q"], reason="deploy", until=600, dry_run=True)
    assert preview.count == 1 and await paused_queues(backend) == {}
    done = await ops.pause(["q"], reason="deploy", until=600)
    record = (await paused_queues(backend))["q"]
    assert done.count == 1 and record["by"] == "tester@host" and record["reason"] == "deploy" and record["until"]
    assert (await ops.overview()).queues[0].verdict == "paused"
    assert (await ops.resume(["q", "other"], dry_run=True)).count == 1
    assert (await ops.resume(["q"])).count == 1 and await paused_queues(backend) == {}
    assert [r["action"] for r in await backend.list_audit()] == ["resume", "pause", "enqueue"]


async def test_broadcast_reaches_a_live_worker_and_pause_goes_through_the_control_plane(
    env: tuple[Ops, Any, Any],
) -> None:
    ops, broker, backend = env
    app = Stem(broker=broker, backend=backend)

    @app.task(name="t.work", queue="q")
    async def work(ctx: Any, i: int = 0) -> int:
        return i

    worker = Worker(app, queues=["q"], concurrency=1, worker_id="w-live", heartbeat_interval=0.2)
    runner = await start(worker)
    try:
        preview = await ops.broadcast("ping", dry_run=True)
        assert preview.count == 1 and preview.sample == [{"worker_id": "w-live"}]
        pong = await ops.broadcast("ping", timeout=10)
        assert pong.ok and pong.count == 1 and pong.detail.replies["w-live"]["worker_id"] == "w-live"
        # a dead worker's heartbeat still lingers: it is stale, so nobody waits for it or fails on it
        await backend.set_heartbeat(heartbeat("ghost", ["q"], age=60))
        assert (await ops.broadcast("ping", dry_run=True)).sample == [{"worker_id": "w-live"}]
        ghost_ping = await ops.broadcast("ping", timeout=10)
        assert ghost_ping.ok and ghost_ping.detail.targeted == ["w-live"] and ghost_ping.detail.missing == []
        paused = await ops.broadcast("pause", {"queues": ["q"], "reason": "maintenance"}, timeout=1)
        assert paused.detail.replies_from == ["w-live"] and (await paused_queues(backend))["q"]["reason"] == "maintenance"
        assert paused.ok and paused.detail.targeted == ["w-live"] and paused.detail.missing == []
        await eventually(lambda: "q" in worker.paused, message="worker paused q")
        resumed = await ops.resume(["q"], timeout=10)
        assert resumed.count == 1
        await eventually(lambda: "q" not in worker.paused, message="worker resumed q")
    finally:
        worker.request_stop("hard")
        await asyncio.wait_for(runner, 30)
    actions = [r["action"] for r in await backend.list_audit()]
    assert actions[:3] == ["resume", "pause", "broadcast"]


async def test_broadcast_with_nobody_listening_reports_no_replies(env: tuple[Ops, Any, Any]) -> None:
    ops, _, _ = env
    result = await ops.broadcast("ping", timeout=0.3)
    assert result.count == 0 and not result.ok
    with pytest.raises(ValueError, match="unknown control command"):
        await ops.broadcast("explode")


async def test_broadcast_raw_reaches_channel_subscribers(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    # Given a subscriber of "news", certainly open: a marker queued for it came through
    # (the queue and the channel are subscribed in one step)
    stream = broker.consume(["sub-ready"], channels=["news"], consumer="sub")
    marker = Envelope(name="t.marker", queue="sub-ready")
    await broker.publish(marker)
    opened = await asyncio.wait_for(anext(stream), 10)
    assert opened.envelope.id == marker.id
    await broker.ack(opened)
    # When a raw broadcast goes to the channel
    result = await ops.broadcast_raw("news", "t.hello", {"who": "all"})
    # Then the subscriber gets it
    delivery = await asyncio.wait_for(anext(stream), 10)
    await stream.aclose()
    assert result.count == 1 and delivery.envelope.name == "t.hello" and delivery.envelope.args == {"who": "all"}


async def test_enqueue_goes_through_stem_and_a_dry_run_publishes_nothing(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    dry = await ops.enqueue("t.work", {"x": 1}, queue="q", priority=5, dry_run=True)
    assert dry.count == 1 and dry.sample[0]["priority"] == 5 and await broker.list_queues() == []
    done = await ops.enqueue("t.work", {"x": 1}, queue="q", priority=5, task_id="fixed-id")
    status = await backend.get_status("fixed-id")
    assert done.detail.ids == ["fixed-id"] and status.state == TaskState.QUEUED and status.meta["queue"] == "q"
    with pytest.raises(ValueError, match="priority"):
        await ops.enqueue("t.work", queue="q", priority=12)


async def test_enqueue_many_validates_everything_first_and_reports_progress(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    with pytest.raises(ValueError, match="item 2"):
        await ops.enqueue_many([("t.a", {}), ("t.b", {}, {"queue": "bad name"})])
    assert await broker.list_queues() == []
    seen: list[tuple[int, int]] = []
    done = await ops.enqueue_many([("t.a", {"i": i}) for i in range(7)], batch_size=3, on_progress=lambda d, t: seen.append((d, t)))
    assert done.count == 7 and len(done.detail.ids) == 7 and seen == [(3, 7), (6, 7), (7, 7)]
    (record,) = await backend.list_audit()
    assert record["arguments"] == {"count": 7, "tasks": {"t.a": 7}}


async def test_enqueue_builds_each_envelope_once(env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The validated envelopes are the ones published: ids match, nothing is built twice
    ops, broker, backend = env
    built: list[str] = []
    stem = ops.dispatcher.app()
    original = stem.build_envelope

    def counting(*args: Any, **kwargs: Any) -> Any:
        envelope = original(*args, **kwargs)
        built.append(envelope.id)
        return envelope

    monkeypatch.setattr(stem, "build_envelope", counting)
    many = await ops.enqueue_many([("t.a", {"i": i}) for i in range(5)], batch_size=2)
    one = await ops.enqueue("t.b", {"x": 1}, queue="q")
    assert built == many.detail.ids + one.detail.ids
    assert (await broker.queue_stats(["default"]))[0].pending == 5


async def test_a_failed_action_is_audited_with_its_error(env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ops, broker, backend = env
    await enqueue_n(ops, 1)

    async def broken(queue: str) -> int:
        raise StemError("disk on fire")

    monkeypatch.setattr(broker, "purge", broken)
    with pytest.raises(StemError, match="disk on fire"):
        await ops.purge("q")
    record = (await backend.list_audit())[0]
    assert record["action"] == "purge" and record["ok"] is False and record["error"] == "StemError: disk on fire"


async def test_audit_records_are_bounded_and_redacted(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    await ops.enqueue("t.work", {"url": "redis://user:hunter2@db:6379/0", "blob": "x" * 10_000, "ids": list(range(500))},
                      queue="q")
    record = (await backend.list_audit())[0]
    args = record["arguments"]["args"]
    assert "hunter2" not in str(record)
    assert isinstance(args, str) and len(args) < AUDIT_VALUE_MAX_CHARS + 100  # cut to bounded JSON text
    assert AUDIT_LIST_MAX_ITEMS == 50


async def test_unknown_queue_and_missing_capability(env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ops, broker, _ = env
    await enqueue_n(ops, 1, queue="emails")
    with pytest.raises(LookupError, match="did you mean emails"):
        await ops.purge("email")
    from stem_core import Capabilities

    caps = broker.capabilities.to_dict() | {"dead_letters": False, "broadcast": False}
    monkeypatch.setattr(type(broker), "capabilities", Capabilities(**caps))
    with pytest.raises(Unsupported, match="keeps no dead letters"):
        await ops.replay("emails")
    with pytest.raises(Unsupported, match="no broadcast"):
        await ops.broadcast("ping")


def test_actor_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEM_ACTOR", "oncall-bob")
    assert default_actor() == "oncall-bob"
    monkeypatch.delenv("STEM_ACTOR")
    assert "@" in default_actor()


async def test_raw_publish_is_visible_to_actions(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    await broker.publish(Envelope(name="t.raw", queue="raw"))
    assert (await ops.purge("raw", dry_run=True)).count == 1


async def test_every_action_names_its_cli_equivalent(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await enqueue_n(ops, 2)
    since = utcnow() - timedelta(hours=1)
    cases = [
        (ops.requeue("q", stuck_leases=True, limit=5, dry_run=True), "stem requeue q --expired-leases --limit 5"),
        (ops.requeue("q", ids=["a b"], dry_run=True), "stem requeue q --id 'a b'"),
        (ops.requeue("q", dead=True, task="t.a", delay=30, dry_run=True), "stem requeue q --dead --task t.a --limit 50 --delay 30s"),
        (ops.replay("q", since=since, dry_run=True), f"stem dlq replay q --since {ops_iso(since)} --limit 50"),
        (ops.purge("q", dry_run=True), "stem purge q"),
        (ops.purge("q", dead=True, limit=3, dry_run=True), "stem dlq purge q --limit 3"),
        (ops.remove("q", ["x"], dry_run=True), "stem purge q --id x"),
        (ops.pause(["q"], reason="db work", dry_run=True), "stem broadcast pause --queue q --reason 'db work'"),
        (ops.resume(["q"], dry_run=True), "stem broadcast resume --queue q"),
        (ops.broadcast("shutdown", {"mode": "soft"}, targets=["w1"], timeout=3, dry_run=True),
         "stem broadcast shutdown --worker w1 --timeout 3s --args '{\"mode\":\"soft\"}'"),
        (ops.broadcast_raw("news", "t.hi", {"a": 1}, dry_run=True), "stem broadcast --channel news t.hi --args '{\"a\":1}'"),
        (ops.enqueue("t.x", {"k": "it's"}, queue="q", priority=3, dry_run=True),
         "stem enqueue t.x --args '{\"k\":\"it'\"'\"'s\"}' --queue q --priority 3"),
    ]
    for pending, expected in cases:
        assert (await pending).command == expected
    done = await ops.purge("q", reason="r")
    assert done.command == "stem purge q" and (await backend.list_audit())[0]["arguments"]["command"] == "stem purge q"


def ops_iso(value: Any) -> str:
    from stem_core.clock import to_iso

    return to_iso(value)


async def test_enqueue_with_a_time_is_audited(env: tuple[Ops, Any, Any]) -> None:
    ops, _, backend = env
    eta = utcnow() + timedelta(hours=2)
    done = await ops.enqueue("t.x", queue="q", eta=eta)
    later = await ops.enqueue("t.x", queue="q", delay=timedelta(minutes=5))
    assert done.detail.audit_error is None and later.detail.audit_error is None
    records = await backend.list_audit()
    assert records[1]["arguments"]["eta"] == ops_iso(eta) and records[0]["arguments"]["delay"] == 300.0
    assert done.command.endswith(f"--eta {ops_iso(eta)}") and later.command.endswith("--delay 300s")
