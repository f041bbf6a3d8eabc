"""``Ops.overview``, ``workers`` and ``leases`` on the memory adapter (the executable spec)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, AsyncIterator

import pytest

from stem_core import Envelope, MessageInfo
from stem_core.clock import utcnow
from stem_core.control.pause import pause_queues
from stem_core.ops import Ops, Sample, UnknownQueue
from stem_core.ops.rates import RATE_RECORD_KEY, RATE_RECORD_KIND
from tests.cli.helpers import claim, heartbeat, inflight_entry, open_memory


@pytest.fixture
async def env(namespace: str) -> AsyncIterator[tuple[Ops, Any, Any]]:
    ops, broker, backend, _ = await open_memory(namespace, stale_after=5.0)
    yield ops, broker, backend
    await broker.close()
    await backend.close()


async def publish(broker: Any, queue: str, n: int, **kw: Any) -> list[Envelope]:
    envs = [Envelope(name="t.work", args={"i": i}, queue=queue, **kw) for i in range(n)]
    await broker.publish_many(envs)
    return envs


async def test_overview_counts_workers_and_pauses(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    # Given pending, delayed and leased messages, two live workers and a paused queue
    await publish(broker, "emails", 4)
    await publish(broker, "emails", 2, not_before=utcnow() + timedelta(hours=1))
    held = await claim(broker, ["emails"], "w1", 1)
    await backend.set_heartbeat(heartbeat("w1", ["emails"], concurrency=3, inflight=[inflight_entry(held[0])]))
    await backend.set_heartbeat(heartbeat("w2", ["reports"], concurrency=2))
    await publish(broker, "reports", 1)
    await pause_queues(backend, ["reports"], reason="deploy", by="ann")
    # When the overview is read
    ov = await ops.overview()
    rows = {q.queue: q for q in ov.queues}
    # Then counts, serving workers and pause state are per queue
    emails, reports = rows["emails"], rows["reports"]
    assert (emails.pending, emails.delayed, emails.inflight, emails.dead) == (3, 2, 1, 0)
    assert emails.workers == ["w1"] and emails.worker_slots == 3 and emails.active == 1
    assert emails.unaccounted_leases == 0 and not emails.paused
    assert emails.verdict == "unknown"  # no rate window yet
    assert reports.paused and reports.paused_by == "ann" and reports.verdict == "paused"
    assert ov.live_workers == 2 and ov.broker == "memory" and ov.capabilities["peek"] is True
    assert ov.to_dict()["queues"][0]["queue"] == "emails"


async def test_overview_hides_control_reply_queues_and_shows_heartbeat_queues(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await publish(broker, "stem.reply.abc123", 1)
    await backend.set_heartbeat(heartbeat("w1", ["idle-queue"]))
    names = [q.queue for q in (await ops.overview()).queues]
    assert names == ["idle-queue"]


async def test_overview_never_peeks_at_messages(env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ops, broker, _ = env
    await publish(broker, "q", 50)
    calls: list[str] = []

    async def spy(*args: Any, **kw: Any) -> list[MessageInfo]:
        calls.append("peek")
        return []

    monkeypatch.setattr(broker, "peek", spy)
    await ops.overview()
    assert calls == []


async def test_a_queue_page_and_its_leases_read_heartbeats_and_pauses_once(
    env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The TUI's detail view and `--watch` pay these reads on every poll.
    ops, broker, backend = env
    await publish(broker, "q", 2)
    await claim(broker, ["q"], "w", 1)
    calls: list[str] = []
    for name in ("list_heartbeats", "list_records"):
        real = getattr(backend, name)

        async def spy(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return await _real(*args, **kw)

        monkeypatch.setattr(backend, name, spy)
    await ops.queue_detail("q")
    assert calls.count("list_heartbeats") == 1 and calls.count("list_records") == 1
    calls.clear()
    assert len(await ops.leases("q")) == 1
    assert calls.count("list_heartbeats") == 1


async def test_leases_without_a_live_heartbeat_are_unaccounted_and_stuck(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await publish(broker, "q", 3)
    await claim(broker, ["q"], "ghost", 2)
    ov = await ops.overview()
    assert ov.queues[0].unaccounted_leases == 2
    leases = await ops.leases()
    assert len(leases) == 2 and all(lease.stuck and "no heartbeat" in lease.stuck_reason for lease in leases)
    assert all(lease.holder == "ghost" and lease.delivery_count == 1 and lease.expires_in > 0 for lease in leases)


async def test_a_lease_taken_since_its_live_holders_last_heartbeat_is_not_orphaned(
    env: tuple[Ops, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a live worker whose last heartbeat reported one lease, and which has taken two
    # more since (the overview's count of in-flight exceeds what heartbeats say)
    ops, broker, backend = env
    await publish(broker, "q", 3)
    first = await claim(broker, ["q"], "w1", 1)
    await backend.set_heartbeat(heartbeat("w1", ["q"], inflight=[inflight_entry(first[0])]))
    await claim(broker, ["q"], "w1", 2)
    peeks: list[str] = []
    real = broker.peek

    async def spy(*args: Any, **kw: Any) -> list[MessageInfo]:
        peeks.append(kw.get("state", "pending"))
        return await real(*args, **kw)

    monkeypatch.setattr(broker, "peek", spy)
    # When the overview is read
    row = (await ops.overview()).queues[0]
    # Then no lease is orphaned: every holder is alive (it looked at the leases to be sure)
    assert row.inflight == 3 and row.unaccounted_leases == 0
    assert peeks == ["inflight"]
    # And once the heartbeat reports all three, it does not even look
    peeks.clear()
    held = [inflight_entry(d) for d in first]
    await backend.set_heartbeat(heartbeat("w1", ["q"], inflight=held * 3))
    assert (await ops.overview()).queues[0].unaccounted_leases == 0 and peeks == []


async def test_a_lease_whose_holder_stopped_heartbeating_is_orphaned_even_when_counts_match(
    env: tuple[Ops, Any, Any]
) -> None:
    # Given a live worker whose heartbeat still lists two leases it already finished, and a
    # dead worker holding two: in flight (2) equals what live heartbeats report (2)
    ops, broker, backend = env
    await publish(broker, "q", 2)
    dead = await claim(broker, ["q"], "dead-worker", 2)
    await backend.set_heartbeat(heartbeat("dead-worker", ["q"], age=60.0, inflight=[inflight_entry(d) for d in dead]))
    await backend.set_heartbeat(heartbeat("live-worker", ["q"], inflight=[inflight_entry(d) for d in dead]))
    # Then the dead worker's two leases are orphaned
    assert (await ops.overview()).queues[0].unaccounted_leases == 2


async def test_lease_of_a_stale_worker_is_stuck_and_of_a_live_one_is_not(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await publish(broker, "q", 2)
    dead = await claim(broker, ["q"], "dead-worker", 1)
    live = await claim(broker, ["q"], "live-worker", 1)
    await backend.set_heartbeat(heartbeat("dead-worker", ["q"], age=60.0, inflight=[inflight_entry(dead[0])]))
    await backend.set_heartbeat(heartbeat("live-worker", ["q"], inflight=[inflight_entry(live[0], running_for=7.0)]))
    by_holder = {lease.holder: lease for lease in await ops.leases("q")}
    stale, fine = by_holder["dead-worker"], by_holder["live-worker"]
    assert stale.stuck and not stale.holder_alive and "stopped heartbeating 1m ago" in stale.stuck_reason
    assert not fine.stuck and fine.holder_alive and fine.state == "active"
    assert fine.held_for == pytest.approx(7.0, abs=5.0) and fine.heartbeat_age < 5.0
    workers = {w.worker_id: w for w in await ops.workers()}
    assert workers["dead-worker"].stale and not workers["live-worker"].stale
    assert workers["live-worker"].active == 1 and workers["dead-worker"].reserved == 0


async def test_an_expired_lease_is_stuck(env: tuple[Ops, Any, Any]) -> None:
    # Memory returns expired leases to the queue at once; Redis keeps them in flight, so the
    # rule is checked on the join itself.
    ops, _, _ = env
    info = MessageInfo(envelope=Envelope(name="t"), state="inflight", lease_holder="w",
                       lease_expires_at=utcnow() - timedelta(seconds=90), delivery_count=2)
    lease = ops.inspector.lease("q", info, {"w": heartbeat("w", ["q"])}, utcnow())
    assert lease.stuck and lease.stuck_reason.startswith("lease expired 1m")


async def test_leases_of_an_unknown_queue_is_an_error(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    await publish(broker, "emails", 1)
    with pytest.raises(UnknownQueue, match="did you mean emails"):
        await ops.leases("emials")


def shifted(stats: Any, seconds: float, **minus: int) -> Sample:
    """A sample ``seconds`` ago whose counters were ``minus`` lower than ``stats`` now."""
    earlier = Sample.take(utcnow() - timedelta(seconds=seconds), stats, [])
    c = earlier.queues["q"]
    earlier.queues["q"] = type(c)(c.enqueued - minus.get("enqueued", 0), c.completed - minus.get("completed", 0),
                                  c.depth - minus.get("depth", 0), c.pending - minus.get("depth", 0),
                                  None if c.age is None else max(0.0, c.age - minus.get("age", 0)))
    return earlier


async def test_rates_and_verdict_from_an_earlier_sample(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    # Given a live worker that finished 5 tasks, and a sample 10 s ago with 10 fewer enqueued
    await publish(broker, "q", 35)
    for delivery in await claim(broker, ["q"], "w1", 5):
        await broker.ack(delivery)
    await backend.set_heartbeat(heartbeat("w1", ["q"]))
    ops.rates.observe(shifted(await broker.queue_stats(["q"]), 10, enqueued=10, completed=5, depth=5))
    # When the overview is read now
    row = (await ops.overview()).queues[0]
    # Then the rates cover the 10 s window and the queue is growing
    assert row.rate_window == pytest.approx(10.0, abs=1.0)
    assert row.in_rate == pytest.approx(1.0, rel=0.1) and row.out_rate == pytest.approx(0.5, rel=0.1)
    assert row.net_rate == pytest.approx(0.5, rel=0.1) and row.rate_source == "counters"
    assert row.verdict == "growing"


async def test_a_queue_where_nothing_completes_and_the_head_ages_is_stalled(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await publish(broker, "q", 3)
    await backend.set_heartbeat(heartbeat("w1", ["q"]))
    ops.rates.observe(shifted(await broker.queue_stats(["q"]), 10, age=10))
    row = (await ops.overview()).queues[0]
    assert row.verdict == "stalled" and "nothing done in 10s" in row.verdict_text


async def test_a_draining_queue_gets_a_forecast(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await publish(broker, "q", 30)
    for delivery in await claim(broker, ["q"], "w1", 20):
        await broker.ack(delivery)
    await backend.set_heartbeat(heartbeat("w1", ["q"]))
    # 20 done in 10 s and nothing enqueued: depth 10 now, -2/s
    ops.rates.observe(shifted(await broker.queue_stats(["q"]), 10, completed=20, depth=-20))
    row = (await ops.overview()).queues[0]
    assert row.verdict == "draining" and row.eta_seconds == pytest.approx(5.0, rel=0.15)


async def test_one_shot_callers_share_persisted_samples(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, backend = env
    await publish(broker, "q", 5)
    await ops.overview()
    await ops.close()  # a one-shot caller's samples are written by the time it has closed
    record = await backend.get_record(RATE_RECORD_KIND, RATE_RECORD_KEY)
    assert record is not None and len(record["samples"]) == 1
    # Given that sample is 5 s old (as if the last operator ran the command then)
    sample = Sample.from_dict(record["samples"][0])
    aged = Sample(at=sample.at - timedelta(seconds=5), queues=sample.queues, workers=sample.workers)
    await backend.put_record(RATE_RECORD_KIND, RATE_RECORD_KEY, {"samples": [aged.to_dict()]})
    # When a fresh Ops (a new CLI process) reads the overview
    fresh = Ops(broker, backend, actor="other")
    row = (await fresh.overview()).queues[0]
    # Then it has a rate window without waiting
    assert row.rate_window == pytest.approx(5.0, abs=1.0) and row.net_rate == pytest.approx(0.0)


async def test_sample_interval_takes_a_second_reading_when_there_is_no_history(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    await publish(broker, "q", 5)
    row = (await Ops(broker, ops.backend, persist_rates=False).overview(sample_interval=0.6)).queues[0]
    assert row.rate_window is not None and row.rate_window >= 0.5


async def test_queue_detail_pages_each_state(env: tuple[Ops, Any, Any]) -> None:
    ops, broker, _ = env
    await publish(broker, "q", 3)
    await publish(broker, "q", 1, not_before=utcnow() + timedelta(hours=1))
    page = await ops.queue_detail("q", "pending", limit=2)
    assert len(page.messages) == 2 and page.next_offset == 2 and page.overview.pending == 3
    assert len((await ops.queue_detail("q", "pending", limit=2, offset=2)).messages) == 1
    assert len((await ops.queue_detail("q", "delayed")).messages) == 1
    assert (await ops.queue_detail("q", "dead")).messages == []
    with pytest.raises(ValueError, match="state must be one of"):
        await ops.queue_detail("q", "done")


async def test_a_malformed_heartbeat_or_pause_record_never_breaks_the_overview(env: tuple[Ops, Any, Any]) -> None:
    # Given one heartbeat with invalid queue names and garbage fields, one written as raw
    # garbage, and pause records naming no valid queue (issue 15: one stray heartbeat
    # made `stem inspect queues` exit 2 and the TUI fail on every refresh)
    from stem_core.control.pause import PAUSE_KIND

    ops, broker, backend = env
    await publish(broker, "work", 2)
    await backend.set_heartbeat(heartbeat("w-bad", ["bad queue", "x" * 300, "work", "a/b"], paused=["no way", "work"]))
    await backend.set_heartbeat(heartbeat("w-good", ["work"]))
    await backend.put_record(PAUSE_KIND, "bad queue!", {"reason": "x"})
    await backend.put_record(PAUSE_KIND, "other", {"workers": 5, "reason": "odd"})
    # Then the overview, the workers and the leases still answer, with the good parts
    overview = await ops.overview()
    assert [q.queue for q in overview.queues] == ["other", "work"]
    assert {w.worker_id for w in await ops.workers()} == {"w-bad", "w-good"}
    await ops.leases()
    await ops.queue_detail("work")
    assert (await ops.explain((await ops.enqueue("t", {}, queue="work")).detail.ids[0])).queue == "work"


def test_decode_heartbeat_skips_what_it_cannot_use() -> None:
    from stem_core.contract import decode_heartbeat

    good = heartbeat("w1", ["q"]).to_dict()
    assert decode_heartbeat(good) is not None
    for raw in ("not json", b"\xff", "[1, 2]", "{}", {**good, "worker_id": 5}, {**good, "timestamp": "yesterday"},
                {**good, "timestamp": None}, {k: v for k, v in good.items() if k != "timestamp"}):
        assert decode_heartbeat(raw) is None
    odd = decode_heartbeat({**good, "queues": "q", "inflight": ["junk", None, {"id": "t"}], "pid": "9" * 5000})
    assert odd is not None and (odd.queues, odd.inflight, odd.pid) == ([], [{"id": "t"}], 0)
