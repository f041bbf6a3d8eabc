"""``ScheduleOps``: the schedules part of ``Ops`` (``docs/schedules.md``): list and show
read the store; add, remove, pause, resume and run-now act, each audited through
``AuditTrail.run`` like every other action."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..contract import Broker, ResultBackend
from ..errors import StemError
from ..schedules import Schedule, ScheduleBook, check_schedule_id
from .audit import AuditTrail
from .directory import Clock
from .models import ActionResult

if TYPE_CHECKING:
    from ..app import Stem


class UnknownSchedule(StemError, LookupError):
    """No schedule has this id."""


class ScheduleExists(StemError, ValueError):
    """``add`` of an id that is taken."""


class ScheduleOps:
    def __init__(self, broker: Broker, backend: ResultBackend, audit: AuditTrail, clock: Clock,
                 app: Callable[[], "Stem"]) -> None:
        self.broker = broker
        self.backend = backend
        self.audit = audit
        self.clock = clock
        self._app = app
        self.book = ScheduleBook(backend, clock=clock)

    # -- reads ---------------------------------------------------------------------------

    async def schedules(self) -> list[Schedule]:
        """Every stored schedule, sorted by id."""
        return await self.book.all()

    async def schedule(self, schedule_id: str) -> Schedule:
        """One schedule; ``UnknownSchedule`` when there is none."""
        check_schedule_id(schedule_id)
        found = await self.book.get(schedule_id)
        if found is None:
            raise UnknownSchedule(f"no schedule {schedule_id!r} (stem schedule list shows them)")
        return found

    # -- audited actions -------------------------------------------------------------------

    async def add_schedule(self, schedule_id: str, task: str, spec: str, *, args: Mapping[str, Any] | None = None,
                           queue: str | None = None, tz: str = "UTC", catch_up: str = "one", paused: bool = False,
                           reason: str | None = None) -> ActionResult:
        """Store a new schedule (``ValueError`` for a bad spec; ``ScheduleExists``)."""
        fresh = Schedule.new(schedule_id, task, spec, now=self.clock(), args=dict(args or {}), queue=queue, tz=tz,
                             catch_up=catch_up, paused=paused)
        arguments = {"id": schedule_id, "task": task, "spec": fresh.spec, "args": fresh.args, "queue": queue, "tz": tz,
                     "catch_up": catch_up, "paused": paused}

        async def work() -> ActionResult:
            stored = await self.book.create(fresh)
            if stored is None:
                raise ScheduleExists(f"schedule {schedule_id!r} exists already (stem schedule remove it first)")
            return self._result("schedule-add", arguments, stored)

        return await self.audit.run("schedule-add", arguments, reason, False, work)

    async def remove_schedule(self, schedule_id: str, *, reason: str | None = None) -> ActionResult:
        current = await self.schedule(schedule_id)

        async def work() -> ActionResult:
            if not await self.book.remove(schedule_id):
                raise UnknownSchedule(f"no schedule {schedule_id!r}")
            return self._result("schedule-remove", {"id": schedule_id}, current)

        return await self.audit.run("schedule-remove", {"id": schedule_id}, reason, False, work)

    async def pause_schedule(self, schedule_id: str, *, reason: str | None = None) -> ActionResult:
        return await self._change("schedule-pause", schedule_id, lambda s: replace(s, paused=True), reason)

    async def resume_schedule(self, schedule_id: str, *, reason: str | None = None) -> ActionResult:
        """Unpause; the next run is computed from now (runs missed while paused are skipped)."""

        def resume(s: Schedule) -> Schedule:
            if not s.paused:
                return s
            return replace(s, paused=False, next_run=s.first_run(self.clock()), claim=None)

        return await self._change("schedule-resume", schedule_id, resume, reason)

    async def run_schedule_now(self, schedule_id: str, *, reason: str | None = None) -> ActionResult:
        """Enqueue the schedule's task now with a fresh id (``next_run`` unchanged); the id
        is recorded as its ``last_task_id``."""
        check_schedule_id(schedule_id)

        async def work() -> ActionResult:
            current = await self.schedule(schedule_id)
            task_id = await self._app().enqueue(current.task, current.args, queue=current.queue)
            stored = await self.book.update(schedule_id, lambda s: replace(s, last_task_id=task_id,
                                                                            last_enqueued_at=self.clock()))
            result = self._result("schedule-run-now", {"id": schedule_id}, stored or current)
            return replace(result, detail=replace(result.detail, ids=[task_id]))

        return await self.audit.run("schedule-run-now", {"id": schedule_id}, reason, False, work)

    async def _change(self, action: str, schedule_id: str, change: Callable[[Schedule], Schedule],
                      reason: str | None) -> ActionResult:
        check_schedule_id(schedule_id)

        async def work() -> ActionResult:
            stored = await self.book.update(schedule_id, change)
            if stored is None:
                raise UnknownSchedule(f"no schedule {schedule_id!r} (stem schedule list shows them)")
            return self._result(action, {"id": schedule_id}, stored)

        return await self.audit.run(action, {"id": schedule_id}, reason, False, work)

    @staticmethod
    def _result(action: str, arguments: dict[str, Any], schedule: Schedule) -> ActionResult:
        d = schedule.to_dict()
        brief = {k: d[k] for k in ("id", "task", "spec", "next_run", "paused", "last_task_id", "version")}
        return ActionResult(action=action, dry_run=False, count=1, sample=[brief], arguments=arguments)


__all__ = ["ScheduleExists", "ScheduleOps", "UnknownSchedule"]
