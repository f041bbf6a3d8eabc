"""``ScheduleBook``: the schedules of one result backend as ``Schedule`` objects, every
change a compare-and-set loop on the store's version (``docs/schedules.md``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable

from ..clock import utcnow
from ..contract import ResultBackend
from ..errors import StemError
from .model import Schedule

# A change retried this many times against concurrent writers before giving up.
CAS_RETRIES = 50


class ScheduleConflict(StemError):
    """A schedule kept changing under a compare-and-set loop."""


class ScheduleBook:
    def __init__(self, backend: ResultBackend, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.backend = backend
        self.clock = clock

    async def get(self, schedule_id: str) -> Schedule | None:
        found = await self.backend.get_schedule(schedule_id)
        return Schedule.from_doc(found[1], found[0]) if found is not None else None

    async def all(self) -> list[Schedule]:
        return [Schedule.from_doc(doc, version) for version, doc in await self.backend.list_schedules()]

    async def create(self, schedule: Schedule) -> Schedule | None:
        """Store a new schedule; None when one with its id exists."""
        version = await self.backend.save_schedule(schedule.id, schedule.to_doc(), None)
        return replace(schedule, version=version) if version is not None else None

    async def save(self, schedule: Schedule) -> Schedule | None:
        """Compare-and-set at ``schedule.version``; the stored one, or None (lost the race)."""
        version = await self.backend.save_schedule(schedule.id, schedule.to_doc(), schedule.version)
        return replace(schedule, version=version) if version is not None else None

    async def update(self, schedule_id: str, change: Callable[[Schedule], Schedule]) -> Schedule | None:
        """Apply ``change`` until its compare-and-set wins; None when there is no such schedule."""
        for _ in range(CAS_RETRIES):
            current = await self.get(schedule_id)
            if current is None:
                return None
            changed = change(current)
            if changed == current:
                return current
            stored = await self.save(changed)
            if stored is not None:
                return stored
        raise ScheduleConflict(f"schedule {schedule_id!r} kept changing; try again")

    async def remove(self, schedule_id: str) -> bool:
        return await self.backend.delete_schedule(schedule_id)

    async def sync(self, declared: list[Schedule]) -> list[str]:
        """Store the code-declared schedules: create the absent ones, update the code ones
        whose definition changed (run state kept); a schedule of the same id added from
        the CLI (``source: ops``) is left alone. Returns the ids created or changed."""
        changed: list[str] = []
        for template in declared:
            for _ in range(CAS_RETRIES):
                now = self.clock()
                current = await self.get(template.id)
                if current is None:
                    fresh = Schedule.new(template.id, template.task, template.spec, now=now, args=template.args,
                                         queue=template.queue, tz=template.tz, catch_up=template.catch_up, source="code")
                    if await self.create(fresh) is not None:
                        changed.append(template.id)
                        break
                    continue
                if current.source != "code" or current.same_definition(template):
                    break  # one added from the CLI is the operator's: a code sync never changes it
                if await self.save(current.with_definition(replace(template, source="code"), now)) is not None:
                    changed.append(template.id)
                    break
            else:
                raise ScheduleConflict(f"schedule {template.id!r} kept changing during the sync")
        return changed


__all__ = ["CAS_RETRIES", "ScheduleBook", "ScheduleConflict"]
