"""The chaos app: task definitions shared by the producer and the worker processes.

Every body records ``start`` and ``finish`` in the process's history
(``$STEM_CHAOS_HISTORY``, see ``history.py``).
"""

from __future__ import annotations

import asyncio
import os

from stem_core import Stem
from stem_core.worker import TaskContext
from tests.chaos.history import current

WORK = "chaos.work"
# Short, so a killed or frozen worker's deliveries come back quickly; the runner sets a
# longer one for SQS on moto (``STEM_CHAOS_LEASE_S``), whose slow answers under load can
# delay a renewal past a 2 s lease.
LEASE_ENV = "STEM_CHAOS_LEASE_S"
LEASE_S = 2.0


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or LEASE_S)


def _record(type_: str, ctx: TaskContext, **fields: object) -> None:
    history = current("worker")
    if history is not None:
        history.record(type_, id=ctx.task_id, **fields)


def register(app: Stem) -> Stem:
    @app.task(name=WORK, visibility_timeout=lease_seconds())
    async def work(ctx: TaskContext, i: int = 0, sleep: float = 0.0) -> int:
        _record("start", ctx, attempt=ctx.attempt, worker=ctx.worker_id)
        if sleep:
            await asyncio.sleep(sleep)
        _record("finish", ctx)
        return i

    return app


app = register(Stem())
