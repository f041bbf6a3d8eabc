"""``Beat``: runs the schedules stored in an app's result backend (``stem beat``,
``stem worker --beat``). Any number of beats may run at once: each due time is claimed
by a compare-and-set, enqueued under its deterministic task id unless a status for that id
exists, then committed by a second compare-and-set (``docs/schedules.md``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

from ..clock import to_iso, utcnow
from ..errors import StemError
from .book import ScheduleBook
from .model import CATCH_UP_MAX, Schedule, task_id_for

if TYPE_CHECKING:
    from ..app import Stem

log = logging.getLogger("stem.beat")

# A claim is good for this long; a beat killed while holding one delays that due time by it.
DEFAULT_LEASE_S = 30.0
# The longest sleep between two looks at the store.
DEFAULT_TICK_S = 1.0


class Beat:
    """The scheduler part: owns its id, lease and loop. ``await beat.run(stop)`` until
    ``stop`` is set; ``await beat.tick()`` runs one pass (tests, ``--once``)."""

    def __init__(self, app: "Stem", *, owner: str | None = None, lease: float = DEFAULT_LEASE_S,
                 tick: float = DEFAULT_TICK_S, clock: Callable[[], datetime] = utcnow) -> None:
        if not lease > 0 or not tick > 0:
            raise ValueError("lease and tick must be positive seconds")
        self.app = app
        self.owner = owner or f"beat-{socket.gethostname()}-{os.getpid()}"
        self.lease = float(lease)
        self.tick_s = float(tick)
        self.clock = clock
        self.enqueued = 0
        self._book: ScheduleBook | None = None

    @property
    def book(self) -> ScheduleBook:
        if self._book is None:
            self._book = ScheduleBook(self.app.backend, clock=self.clock)
        return self._book

    async def start(self) -> None:
        """Connect and sync the app's code-declared schedules into the store."""
        await self.app.connect()
        changed = await self.book.sync(list(self.app.schedules.values()))
        if changed:
            log.info("synced schedules: %s", ", ".join(changed))

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        log.info("beat %s running (lease %gs)", self.owner, self.lease)
        while not stop.is_set():
            try:
                wait = await self.tick()
            except StemError as exc:  # a server hiccup: try again next tick
                log.warning("beat pass failed: %s", exc)
                wait = self.tick_s
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def tick(self) -> float:
        """One pass over the stored schedules; returns how long to sleep until the next."""
        soonest = self.tick_s
        for schedule in await self._all():
            try:
                for _ in range(CATCH_UP_MAX):
                    current = await self._step(schedule)
                    if current is None:
                        break
                    schedule = current
            except (ValueError, KeyError, TypeError) as exc:  # one bad stored schedule never stops the others
                log.warning("schedule %s skipped: %s: %s", schedule.id, type(exc).__name__, exc)
                continue
            now = self.clock()
            if not schedule.paused and schedule.next_run is not None:
                soonest = min(soonest, max(0.0, (schedule.next_run - now).total_seconds()))
        return max(0.01, soonest)

    async def _all(self) -> list[Schedule]:
        out = []
        for version, doc in await self.app.backend.list_schedules():
            try:
                out.append(Schedule.from_doc(doc, version))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("stored schedule %r unreadable: %s", doc.get("id"), exc)
        return out

    async def _step(self, s: Schedule) -> Schedule | None:
        """Run ``s``'s next due time if it is due; the schedule afterwards (to look again)
        or None when there is nothing more to do now."""
        now = self.clock()
        if s.claimed_by_other(self.owner, now):
            return None
        plan = s.plan(now)
        if plan is None:
            return None
        due, after = plan
        if due is None:  # catch_up none: skip the missed due times
            return await self.book.save(replace(s, next_run=after, claim=None))
        task_id = task_id_for(s, due)
        until = now + timedelta(seconds=self.lease)
        claim = {"owner": self.owner, "due": to_iso(due), "task_id": task_id, "until": to_iso(until)}
        claimed = await self.book.save(replace(s, claim=claim))
        if claimed is None:
            return None  # another beat moved first
        error = None
        if await self.app.backend.get_status(task_id) is None:
            # Enqueue only with at least half the lease left, and bounded by it, so a beat
            # that took over after our lease expired cannot overlap with this enqueue.
            budget = (until - self.clock()).total_seconds() - self.lease / 2
            if budget <= 0:
                return None  # too slow: leave the claim to expire, another pass retries
            try:
                async with asyncio.timeout(budget):
                    await self._enqueue(s, task_id)
                self.enqueued += 1
                log.info("schedule %s: enqueued %s for %s", s.id, task_id, to_iso(due))
            except ValueError as exc:  # bad args for the task: recorded, the due time passes
                error = str(exc)
                log.warning("schedule %s: cannot enqueue %s: %s", s.id, s.task, exc)
        committed = replace(claimed, claim=None, next_run=after, last_run=due, last_task_id=task_id,
                            last_enqueued_at=self.clock(), last_error=error)
        return await self.book.save(committed)

    async def _enqueue(self, s: Schedule, task_id: str) -> None:
        """Enqueue the due run with its queued status stored even for an
        ``ignore_result`` task: that status is how the next beat knows the run exists."""
        envelope = self.app.build_envelope(s.task, s.args, queue=s.queue, task_id=task_id, ignore_result=False)
        await self.app.enqueue_envelopes([envelope])

__all__ = ["Beat", "DEFAULT_LEASE_S", "DEFAULT_TICK_S"]
