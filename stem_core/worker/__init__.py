"""The worker runtime: consume, execute, renew leases, heartbeat, obey the control plane.

``Worker`` runs an app's tasks; tasks receive a ``TaskContext``; ``Retry`` and ``Reject``
steer the retry policy from inside a task. See ``docs/worker.md``.
"""

from .context import TaskContext
from .execution import (
    INVALID_ENVELOPE,
    INVALID_RESULT,
    MAX_RETRIES_EXHAUSTED,
    REJECTED,
    UNREGISTERED_TASK,
)
from .retry import Reject, Retry, TimeLimitExceeded, backoff_seconds
from .runtime import Worker

__all__ = [
    "INVALID_ENVELOPE",
    "INVALID_RESULT",
    "MAX_RETRIES_EXHAUSTED",
    "REJECTED",
    "Reject",
    "Retry",
    "TaskContext",
    "TimeLimitExceeded",
    "UNREGISTERED_TASK",
    "Worker",
    "backoff_seconds",
]
