"""Periodic and one-off schedules (``docs/schedules.md``): specs, the stored model, the
compare-and-set book over the result backend, and the ``Beat`` runner."""

from .beat import DEFAULT_LEASE_S, DEFAULT_TICK_S, Beat
from .book import ScheduleBook, ScheduleConflict
from .model import CATCH_UP, DEFAULT_CATCH_UP, MISFIRE_GRACE_S, Schedule, check_catch_up, check_schedule_id, task_id_for
from .spec import Spec, parse_spec

__all__ = [
    "Beat",
    "CATCH_UP",
    "DEFAULT_CATCH_UP",
    "DEFAULT_LEASE_S",
    "DEFAULT_TICK_S",
    "MISFIRE_GRACE_S",
    "Schedule",
    "ScheduleBook",
    "ScheduleConflict",
    "Spec",
    "check_catch_up",
    "check_schedule_id",
    "parse_spec",
    "task_id_for",
]
