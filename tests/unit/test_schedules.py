"""Schedules without servers: spec parsing, time zones and DST, the catch-up policy, and
beats on a memory backend (a fake clock): one enqueue per due time, a beat dying between
its steps, pause and code sync (``docs/schedules.md``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from stem_core import Stem
from stem_core.schedules import Beat, Schedule, ScheduleBook, parse_spec, task_id_for

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("text,kind,normal", [
    ("every 30s", "every", "every 30s"),
    ("  every   5m ", "every", "every 5m"),
    ("cron */5 * * * *", "cron", "cron */5 * * * *"),
    ("0 3 * * mon-fri", "cron", "cron 0 3 * * mon-fri"),
    ("cron */10 * * * * *", "cron", "cron */10 * * * * *"),
    ("at 2027-01-01T00:00Z", "at", "at 2027-01-01T00:00:00.000Z"),
])
def test_parse_good_specs(text: str, kind: str, normal: str) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.text) == (kind, normal)


@pytest.mark.parametrize("text", [
    "", "every", "every 0s", "every 0.5s", "every soon", "cron 61 * * * *", "cron * * *", "at tomorrow",
    "whenever", "cron * * * * * * *", "x" * 300,
])
def test_parse_bad_specs_are_one_line_value_errors(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_spec(text)
    assert "\n" not in str(info.value) and "schedule" in str(info.value)


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        parse_spec("cron 0 3 * * *", tz="Mars/Olympus")


def test_six_fields_have_seconds_first() -> None:
    spec = parse_spec("cron 30 * * * * *")
    assert spec.next_after(T0) == T0 + timedelta(seconds=30)


def test_intervals_count_from_the_anchor() -> None:
    spec = parse_spec("every 10s")
    anchor = T0 + timedelta(seconds=3)
    assert spec.next_after(T0 + timedelta(seconds=3), anchor) == T0 + timedelta(seconds=13)
    assert spec.next_after(T0 + timedelta(seconds=12.5), anchor) == T0 + timedelta(seconds=13)
    assert spec.latest_at_or_before(T0 + timedelta(seconds=40), T0 + timedelta(seconds=13), anchor) == T0 + timedelta(seconds=33)


# -- time zones and DST -----------------------------------------------------------------


def test_daily_cron_keeps_local_time_across_dst() -> None:
    spec = parse_spec("cron 0 3 * * *", tz="Europe/Paris")
    # CET (UTC+1) before 2026-03-29, CEST (UTC+2) after.
    assert spec.next_after(datetime(2026, 3, 27, 12, tzinfo=UTC)) == datetime(2026, 3, 28, 2, tzinfo=UTC)
    assert spec.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert spec.next_after(datetime(2026, 10, 24, 12, tzinfo=UTC)) == datetime(2026, 10, 25, 2, tzinfo=UTC)


def test_skipped_local_time_runs_once_at_the_next_instant() -> None:
    spec = parse_spec("cron 30 2 * * *", tz="Europe/Paris")  # 02:30 does not exist on 2026-03-29
    first = spec.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert first == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert spec.next_after(first) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_repeated_local_time_runs_once() -> None:
    spec = parse_spec("cron 30 2 * * *", tz="Europe/Paris")  # 02:30 happens twice on 2026-10-25
    first = spec.next_after(datetime(2026, 10, 24, 12, tzinfo=UTC))
    second = spec.next_after(first)
    assert first.date() == datetime(2026, 10, 25).date()
    assert second - first >= timedelta(hours=23)


# -- catch-up ---------------------------------------------------------------------------


def schedule(spec: str = "every 10s", catch_up: str = "one") -> Schedule:
    return Schedule.new("s", "t.run", spec, now=T0, catch_up=catch_up)


def test_plan_nothing_before_the_first_due_time() -> None:
    s = schedule()
    assert s.next_run == T0 + timedelta(seconds=10)
    assert s.plan(T0 + timedelta(seconds=5)) is None
    assert replace(s, paused=True).plan(T0 + timedelta(seconds=50)) is None


@pytest.mark.parametrize("catch_up,due,after", [
    ("all", 10, 20),
    ("one", 100, 110),
    ("none", 100, 110),
])
def test_plan_after_a_short_downtime(catch_up: str, due: int, after: int) -> None:
    s = schedule(catch_up=catch_up)
    assert s.plan(T0 + timedelta(seconds=105)) == (T0 + timedelta(seconds=due), T0 + timedelta(seconds=after))


def test_plan_none_skips_what_is_older_than_the_grace() -> None:
    s = schedule("every 1h", catch_up="none")
    assert s.plan(T0 + timedelta(hours=2, minutes=30)) == (None, T0 + timedelta(hours=3))
    assert s.plan(T0 + timedelta(hours=2, seconds=5)) == (T0 + timedelta(hours=2), T0 + timedelta(hours=3))


def test_one_off() -> None:
    s = Schedule.new("o", "t.run", "at 2026-06-01T12:01:00Z", now=T0)
    assert s.plan(T0) is None
    assert s.plan(T0 + timedelta(minutes=5)) == (T0 + timedelta(minutes=1), None)


def test_task_ids_are_deterministic_per_generation() -> None:
    s = schedule()
    due = T0 + timedelta(seconds=10)
    assert task_id_for(s, due) == task_id_for(replace(s, paused=True), due)
    assert task_id_for(s, due) != task_id_for(s, due + timedelta(seconds=10))
    assert task_id_for(s, due) != task_id_for(schedule(), due)  # a new generation


# -- beats on a memory backend -------------------------------------------------------------


@pytest.fixture
async def app() -> Stem:
    import uuid

    name = uuid.uuid4().hex[:8]
    stem = Stem(broker=f"memory://{name}", backend=f"memory://{name}", namespace="beat")
    await stem.connect()
    yield stem  # type: ignore[misc]
    await stem.close()


async def queued_ids(app: Stem) -> list[str]:
    return sorted(s.id for s in await app.backend.list_statuses(limit=1000))


async def test_concurrent_beats_enqueue_each_due_time_once(app: Stem) -> None:
    clock = Clock()
    app.schedule("tick", "t.run", "every 1s", catch_up="all")
    beats = [Beat(app, owner=f"b{i}", clock=clock, lease=5) for i in range(3)]
    for beat in beats:
        await beat.start()
    for _ in range(20):
        clock.advance(1)
        await asyncio.gather(*(b.tick() for b in beats))
    ids = await queued_ids(app)
    stored = await ScheduleBook(app.backend).get("tick")
    assert stored is not None and stored.last_run is not None
    assert len(ids) == len(set(ids)) == sum(b.enqueued for b in beats) == 20
    assert stored.last_task_id == task_id_for(stored, stored.last_run)
    assert (await app.broker.queue_stats(["default"]))[0].pending == 20


async def test_beat_dying_after_its_claim_or_its_enqueue(app: Stem) -> None:
    clock = Clock()
    app.schedule("tick", "t.run", "every 10s", catch_up="all")
    book = ScheduleBook(app.backend)
    dead = Beat(app, owner="dead", clock=clock, lease=5)
    await dead.start()
    clock.advance(10)
    s = await book.get("tick")
    assert s is not None
    # Dies after claiming (nothing enqueued): the claim blocks others until it expires.
    await book.save(replace(s, claim={"owner": "dead", "due": "2026-06-01T12:00:10.000Z",
                                      "task_id": task_id_for(s, T0 + timedelta(seconds=10)),
                                      "until": "2026-06-01T12:00:15.000Z"}))
    other = Beat(app, owner="other", clock=clock, lease=5)
    await other.tick()
    assert other.enqueued == 0
    clock.advance(6)
    await other.tick()
    assert other.enqueued == 1
    # Dies after enqueueing the 20 s run (status written, no commit): not enqueued again.
    s = await book.get("tick")
    assert s is not None and s.next_run == T0 + timedelta(seconds=20)
    await app.enqueue("t.run", {}, task_id=task_id_for(s, T0 + timedelta(seconds=20)))
    clock.advance(10)
    await other.tick()
    s = await book.get("tick")
    assert s is not None and s.last_run == T0 + timedelta(seconds=20) and s.claim is None
    assert other.enqueued == 1
    assert len(await queued_ids(app)) == 2


async def test_a_scheduled_ignore_result_task_still_gets_its_queued_status(app: Stem) -> None:
    # The queued status is how a beat that takes over knows a due time was enqueued, so
    # the beat keeps it even for a task that ignores its result (else a beat killed after
    # its enqueue would have the next one enqueue the same due time again).
    clock = Clock()
    app.ignore_result = True
    app.schedule("tick", "t.run", "every 10s", catch_up="all")
    beat = Beat(app, owner="b", clock=clock, lease=5)
    await beat.start()
    clock.advance(10)
    await beat.tick()
    stored = await ScheduleBook(app.backend).get("tick")
    assert stored is not None and stored.last_task_id is not None
    status = await app.backend.get_status(stored.last_task_id)
    assert status is not None and status.state.value == "queued"


async def test_code_sync_keeps_run_state_and_ops_schedules(app: Stem) -> None:
    clock = Clock()
    book = ScheduleBook(app.backend, clock=clock)
    await book.create(Schedule.new("manual", "t.other", "every 1m", now=T0))
    app.schedule("tick", "t.run", "every 10s")
    beat = Beat(app, owner="b", clock=clock)
    await beat.start()
    await book.update("tick", lambda s: replace(s, paused=True))
    app.schedules.clear()
    app.schedule("tick", "t.run", "every 20s")
    await Beat(app, owner="c", clock=clock).start()
    tick = await book.get("tick")
    assert tick is not None and tick.spec == "every 20s" and tick.paused and tick.source == "code"
    assert [s.id for s in await book.all()] == ["manual", "tick"]


def test_periodic_registers_task_and_schedule() -> None:
    stem = Stem(broker="memory://x", backend="memory://x")

    @stem.periodic("every 30s", name="jobs.tick", catch_up="all")
    async def tick(ctx: object) -> None: ...

    assert "jobs.tick" in stem.registry
    assert stem.schedules["jobs.tick"].spec == "every 30s" and stem.schedules["jobs.tick"].catch_up == "all"
    with pytest.raises(ValueError):
        stem.schedule("bad", "jobs.tick", "every never")


async def test_code_sync_leaves_an_ops_schedule_of_the_same_id_alone(app: Stem) -> None:
    book = ScheduleBook(app.backend)
    await book.create(Schedule.new("tick", "t.other", "every 1m", now=T0))
    app.schedule("tick", "t.run", "every 10s")
    await Beat(app, owner="b").start()
    tick = await book.get("tick")
    assert tick is not None and (tick.task, tick.spec, tick.source) == ("t.other", "every 1m", "ops")


def test_a_number_or_timedelta_spec_in_code_is_an_interval() -> None:
    app = Stem(broker="memory://numbers", namespace="beat")
    assert app.schedule("a", "t.run", 30).spec == "every 30s"
    assert app.schedule("b", "t.run", timedelta(minutes=5)).spec == "every 300s"
    with pytest.raises(ValueError, match="at least 1s"):
        app.schedule("c", "t.run", 0.5)
