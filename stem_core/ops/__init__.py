"""The operator API used by the CLI and the TUI: plain JSON-ready dataclasses out, on every
broker through the contracts and their capability flags. See ``docs/ops.md``."""

from .api import Ops
from .audit import ENV_ACTOR, default_actor
from .commands import shell_quote, stem_command
from .connect import CONNECT_TIMEOUT_S, open_adapters, open_backend, open_broker
from .directory import LEASES_LIMIT, STALE_AFTER_S, UnknownQueue
from .explain import EXPLAIN_SCAN_LIMIT
from .inspect import DETAIL_STATES
from .models import (
    ActionDetail,
    ActionResult,
    Blocker,
    Explanation,
    LeaseInfo,
    Overview,
    QueueDetail,
    QueueOverview,
    WorkerInfo,
    jsonable,
)
from .rates import RATE_WINDOW_S, RateTracker, Sample
from .schedules import ScheduleExists, UnknownSchedule
from .verdict import Verdict, queue_verdict

__all__ = [
    "ActionDetail",
    "ActionResult",
    "Blocker",
    "CONNECT_TIMEOUT_S",
    "DETAIL_STATES",
    "ENV_ACTOR",
    "EXPLAIN_SCAN_LIMIT",
    "Explanation",
    "LEASES_LIMIT",
    "LeaseInfo",
    "Ops",
    "Overview",
    "QueueDetail",
    "QueueOverview",
    "RATE_WINDOW_S",
    "RateTracker",
    "STALE_AFTER_S",
    "ScheduleExists",
    "Sample",
    "UnknownQueue",
    "UnknownSchedule",
    "Verdict",
    "WorkerInfo",
    "default_actor",
    "jsonable",
    "open_adapters",
    "open_backend",
    "open_broker",
    "queue_verdict",
    "shell_quote",
    "stem_command",
]
