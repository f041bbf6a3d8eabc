"""Read this first: the contracts every adapter implements, and their value types."""

from .backend import ResultBackend, StatusWrite
from .broker import Broker, Subscription
from .types import (
    Capabilities,
    DeadLetterEntry,
    DeadLetterPage,
    MessageInfo,
    MessagePage,
    QueueStats,
    ReplayResult,
    TaskState,
    TaskStatus,
    WorkerHeartbeat,
    decode_heartbeat,
)

__all__ = [
    "Broker",
    "Capabilities",
    "DeadLetterEntry",
    "DeadLetterPage",
    "MessageInfo",
    "MessagePage",
    "QueueStats",
    "ReplayResult",
    "ResultBackend",
    "StatusWrite",
    "Subscription",
    "TaskState",
    "TaskStatus",
    "WorkerHeartbeat",
    "decode_heartbeat",
]
