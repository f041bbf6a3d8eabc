"""Stem: background jobs over one broker contract, with an operator CLI and TUI.

The public API. ``Stem``, ``Worker`` and ``__version__`` are loaded on first use so that
importing ``stem_core`` stays cheap and pulls in no driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .adapters import connect_backend, connect_broker
from .contract import (
    Broker,
    Capabilities,
    DeadLetterEntry,
    DeadLetterPage,
    MessageInfo,
    QueueStats,
    ReplayResult,
    ResultBackend,
    TaskState,
    TaskStatus,
    WorkerHeartbeat,
)
from .envelope import Delivery, Envelope
from .errors import InvalidEnvelope, StemError

if TYPE_CHECKING:
    from .app import Stem
    from .version import __version__
    from .worker import Worker

__all__ = [
    "Broker",
    "Capabilities",
    "DeadLetterEntry",
    "DeadLetterPage",
    "Delivery",
    "Envelope",
    "InvalidEnvelope",
    "MessageInfo",
    "QueueStats",
    "ReplayResult",
    "ResultBackend",
    "Stem",
    "StemError",
    "TaskState",
    "TaskStatus",
    "Worker",
    "WorkerHeartbeat",
    "__version__",
    "connect_backend",
    "connect_broker",
]


def __getattr__(name: str) -> Any:
    if name == "Stem":
        from .app import Stem

        return Stem
    if name == "Worker":
        from .worker import Worker

        return Worker
    if name == "__version__":
        from .version import __version__

        return __version__
    raise AttributeError(f"module 'stem_core' has no attribute {name!r}")
