"""The worker's heartbeat: who it is, what it holds, its counters (SPEC §5)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from ..clock import utcnow
from ..contract import WorkerHeartbeat

if TYPE_CHECKING:
    from .runtime import Worker

# The last heartbeat of a worker that stopped cleanly: it disappears from the live list
# almost at once instead of after the normal 60 s TTL.
GONE_HEARTBEAT_TTL_S = 0.05


def build_heartbeat(worker: "Worker") -> WorkerHeartbeat:
    from .. import __version__

    return WorkerHeartbeat(
        worker_id=worker.worker_id,
        namespace=worker.app.namespace,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=list(worker.queues),
        concurrency=worker.concurrency,
        inflight=[held.info() for held in worker.held],
        processed=worker.counters.processed,
        failed=worker.counters.failed,
        retried=worker.counters.retried,
        paused_queues=worker.paused_queues(),
        version=__version__,
        timestamp=utcnow(),
        interval=worker.heartbeat_interval,
    )


__all__ = ["GONE_HEARTBEAT_TTL_S", "build_heartbeat"]
