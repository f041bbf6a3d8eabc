"""A seeded scene for the TUI tests and snapshots: a memory store with every kind of queue
an operator meets, at a frozen time, with fixed ids so pictures are stable.

    clock = FrozenClock()
    freeze(monkeypatch, clock)            # stem_core's utcnow -> clock
    app = make_app(url, namespace, clock) # live=False: polls only when the test says
    async with app.run_test(size=(80, 24)) as pilot:
        scene = await seed(url, namespace, clock)
        await poll(pilot)
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from stem_core import Broker, Delivery, Envelope, ResultBackend, WorkerHeartbeat, connect_backend, connect_broker
from stem_core import clock as clock_module
from stem_core.clock import UTC, to_iso
from stem_core.control.pause import pause_queues
from stem_tui.app import StemTui
from stem_tui.source import DataSource

FROZEN_AT = datetime(2026, 11, 29, 3, 4, 5, tzinfo=UTC)
# Bound a hang, never asserted on.
DEADLINE_S = 30.0
HOSTILE_NAME = "\x1b[31mred\x1b[0m[bold]loud[/bold][@click=app.quit]"
HOSTILE_ARG = "\x1b]0;pwned\x07[@click=app.quit]quit[/] \u202eevil"


class FrozenClock:
    """``utcnow`` that only moves when told to."""

    def __init__(self, at: datetime = FROZEN_AT) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _import_all_of_stem_core() -> None:
    """Import every ``stem_core`` module now, so none is first imported while the clock is
    frozen (it would bind the frozen ``utcnow`` for good and outlive the monkeypatch)."""
    import stem_core

    for info in pkgutil.walk_packages(stem_core.__path__, "stem_core."):
        try:
            importlib.import_module(info.name)
        except ImportError:  # a driver that is not installed: its adapter is not used here
            pass


def freeze(monkeypatch: pytest.MonkeyPatch, clock: FrozenClock) -> None:
    """Point every ``stem_core`` module's ``utcnow`` at ``clock`` (undone after the test)."""
    _import_all_of_stem_core()
    original = clock_module.utcnow
    assert not isinstance(original, FrozenClock), "a frozen clock leaked out of an earlier test"
    for name, module in list(sys.modules.items()):
        if (name == "stem_core" or name.startswith("stem_core.")) and getattr(module, "utcnow", None) is original:
            monkeypatch.setattr(module, "utcnow", clock)


def memory_url() -> str:
    return f"memory://tui-{uuid.uuid4().hex[:12]}"


def make_app(url: str, namespace: str, clock: FrozenClock, **options: Any) -> StemTui:
    async def connect() -> tuple[Broker, ResultBackend]:
        return (await connect_broker(url, namespace=namespace), await connect_backend(url, namespace=namespace))

    source = DataSource(connect, label=options.pop("label", url), clock=clock, actor="tester@tui", live=False,
                        stale_after=options.pop("stale_after", 30.0))
    return StemTui(source, blink=False, **options)


async def poll(pilot: Any, *, advance: float = 0.0) -> None:
    """One poll of the app's source (after moving the frozen clock), fully applied."""
    app = pilot.app
    if advance:
        app.clock.advance(advance)  # type: ignore[attr-defined]
    app.source.refresh_now()
    await app.workers.wait_for_complete()
    await pilot.pause()


def task_id(n: int) -> str:
    return f"0193e0a0-0000-7000-8000-{n:012d}"


@dataclass
class Scene:
    url: str
    namespace: str
    clock: FrozenClock
    broker: Broker
    backend: ResultBackend
    held: dict[str, list[Delivery]] = field(default_factory=dict)

    async def close(self) -> None:
        await self.broker.close()
        await self.backend.close()


async def claim(broker: Broker, queue: str, consumer: str, count: int) -> list[Delivery]:
    out: list[Delivery] = []
    stream = broker.consume([queue], prefetch=count, consumer=consumer)
    try:
        async with asyncio.timeout(DEADLINE_S):
            async for delivery in stream:
                out.append(delivery)
                if len(out) >= count:
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return out


def envelope(n: int, name: str, queue: str, clock: FrozenClock, *, age: float, **fields: Any) -> Envelope:
    return Envelope(id=task_id(n), name=name, queue=queue, enqueued_at=clock() - timedelta(seconds=age), **fields)


def inflight(delivery: Delivery, clock: FrozenClock, running_for: float | None) -> dict[str, Any]:
    started = to_iso(clock() - timedelta(seconds=running_for)) if running_for is not None else None
    return {"id": delivery.envelope.id, "name": delivery.envelope.name, "queue": delivery.queue, "started_at": started,
            "lease_expires_at": to_iso(delivery.lease_expires_at) if delivery.lease_expires_at else None,
            "state": "active" if running_for is not None else "reserved", "attempt": delivery.envelope.attempt}


def heartbeat(worker_id: str, queues: list[str], clock: FrozenClock, *, age: float = 2.0, concurrency: int = 4,
              entries: list[dict[str, Any]] | None = None, processed: int = 0, failed: int = 0,
              paused: list[str] | None = None, namespace: str = "stem") -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=worker_id, namespace=namespace, host="ops-box", pid=4242, queues=queues,
                           concurrency=concurrency, inflight=list(entries or []), processed=processed, failed=failed,
                           retried=1, paused_queues=list(paused or []), version="0.1.0",
                           timestamp=clock() - timedelta(seconds=age))


async def seed(url: str, namespace: str, clock: FrozenClock, *, hostile: bool = False) -> Scene:
    """The scene: emails (served, busy), reports (a lease held by a dead worker), billing
    (dead letters), exports (nobody serves it), scheduled (delayed only), media (paused)."""
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    scene = Scene(url, namespace, clock, broker, backend)
    name = HOSTILE_NAME if hostile else "email.send"
    args: dict[str, Any] = {"to": HOSTILE_ARG if hostile else "ada@example.com", "subject": "[b]welcome[/b]"}
    await broker.publish_many([envelope(i, name, "emails", clock, age=90 - i, args=args) for i in range(1, 8)])
    await broker.publish_many([envelope(20 + i, "report.build", "reports", clock, age=300 - i, args={"id": i})
                               for i in range(1, 5)])
    await broker.publish_many([envelope(40 + i, "export.csv", "exports", clock, age=600 + i) for i in range(1, 5)])
    await broker.publish_many([envelope(60 + i, "digest.send", "scheduled", clock, age=5,
                                        not_before=clock() + timedelta(minutes=30 + i)) for i in range(1, 3)])
    await broker.publish_many([envelope(80 + i, "thumb.make", "media", clock, age=40) for i in range(1, 3)])
    await broker.publish_many([envelope(100 + i, "invoice.charge", "billing", clock, age=900 + i, max_retries=3,
                                        attempt=3) for i in range(1, 4)])
    emails = await claim(broker, "emails", "w-1", 2)
    reports = await claim(broker, "reports", "w-gone", 1)
    dead = await claim(broker, "billing", "w-2", 3)
    for delivery in dead:
        await backend.set_status(delivery.envelope.id, "failed", attempt=3, error={
            "type": "CardDeclined", "message": "card declined (code 51)",
            "traceback": "Traceback (most recent call last):\n  File \"billing.py\", line 12, in charge\n"
                         "CardDeclined: card declined (code 51)"})
        await broker.dead_letter(delivery, reason="max-retries-exhausted")
    scene.held = {"emails": emails, "reports": reports}
    worker_one = "w-1" if not hostile else "w-1\x1b[2J[bold]"
    await backend.set_heartbeat(heartbeat(worker_one, ["emails", "reports", "media"], clock, processed=120, failed=3,
                                          entries=[inflight(emails[0], clock, 12.0), inflight(emails[1], clock, None)],
                                          namespace=namespace))
    await backend.set_heartbeat(heartbeat("w-2", ["billing"], clock, age=45.0, concurrency=2, processed=40, failed=3,
                                          namespace=namespace))
    await pause_queues(backend, ["media"], reason="deploy 4.2", by="ops@box", until=None)
    return scene


__all__ = ["FROZEN_AT", "FrozenClock", "HOSTILE_ARG", "HOSTILE_NAME", "Scene", "claim", "freeze", "make_app", "memory_url",
           "poll", "seed", "task_id"]


async def seed_schedules(backend: ResultBackend, clock: FrozenClock) -> None:
    """Four stored schedules at fixed generations (so their task ids are stable): a cron
    in Paris that succeeded, a code-declared interval running now, a paused one whose
    last run failed, and a one-off still to come."""
    from dataclasses import replace

    from stem_core.schedules import Schedule, ScheduleBook

    now = clock()
    book = ScheduleBook(backend, clock=clock)
    items = [
        (replace(Schedule.new("nightly-report", "report.build", "cron 0 3 * * *", now=now, tz="Europe/Paris",
                              args={"kind": "daily"}), generation="g1"), 6 * 3600.0, "succeeded"),
        (replace(Schedule.new("cleanup.tick", "cleanup.tick", "every 30s", now=now, source="code"), generation="g2"),
         20.0, "running"),
        (replace(Schedule.new("crm.sync", "crm.sync", "every 5m", now=now, paused=True, catch_up="all"),
                 generation="g3"), 420.0, "failed"),
        (replace(Schedule.new("launch", "launch.go", "at 2027-01-01T00:00Z", now=now, catch_up="none"),
                 generation="g4"), None, None),
    ]
    for n, (schedule, ago, state) in enumerate(items):
        if ago is not None:
            last = now - timedelta(seconds=ago)
            schedule = replace(schedule, last_run=last, last_task_id=task_id(900 + n), last_enqueued_at=last)
            await backend.set_status(task_id(900 + n), state, meta={"task": schedule.task, "queue": "default"})
        await book.create(schedule)
