"""The worker's heartbeat: who it is, what it holds, its counters (SPEC §5)."""

from __future__ import annotations

import os
import socket

from ..clock import utcnow
from ..contract import WorkerHeartbeat
from ..version import __version__
from .control_state import ControlState
from .execution import Counters
from .held import HeldSet

# The last heartbeat of a worker that stopped cleanly: it disappears from the live list
# almost at once instead of after the normal 60 s TTL.
GONE_HEARTBEAT_TTL_S = 0.05


def build_heartbeat(
    control: ControlState, *, namespace: str, concurrency: int, held: HeldSet, counters: Counters, interval: float
) -> WorkerHeartbeat:
    """The heartbeat of the worker ``control`` belongs to, as of now."""
    return WorkerHeartbeat(
        worker_id=control.worker_id,
        namespace=namespace,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=list(control.queues),
        concurrency=concurrency,
        inflight=[entry.info() for entry in held],
        processed=counters.processed,
        failed=counters.failed,
        retried=counters.retried,
        paused_queues=control.paused_queues(),
        version=__version__,
        timestamp=utcnow(),
        interval=interval,
    )


__all__ = ["GONE_HEARTBEAT_TTL_S", "build_heartbeat"]
