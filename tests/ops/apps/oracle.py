"""Tasks for the verdict oracle (``tests/ops/test_verdict_oracle.py``).

Every execution appends ``start <task id> <pid>`` to ``$STEM_TEST_LOG_DIR/<pid>.log`` with an
unbuffered ``O_APPEND`` write, so the oracle knows from outside Stem which process ran what
(a SIGKILL cannot lose a written line).
"""

from __future__ import annotations

import asyncio
import os

from stem_core import Stem
from stem_core.worker import TaskContext

QUEUE = "work"
LOG_DIR_ENV = "STEM_TEST_LOG_DIR"
# Short leases, so a dead holder's messages come back within the phase.
LEASE_S = 4.0

_fd: int | None = None


def record(task_id: str) -> None:
    global _fd
    directory = os.environ.get(LOG_DIR_ENV)
    if not directory:
        return
    if _fd is None:
        _fd = os.open(os.path.join(directory, f"{os.getpid()}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(_fd, f"start {task_id} {os.getpid()}\n".encode())


def register(app: Stem) -> Stem:
    @app.task(name="o.job", queue=QUEUE, visibility_timeout=LEASE_S)
    async def job(ctx: TaskContext, seconds: float = 0.0) -> None:
        record(ctx.task_id)
        if seconds:
            await asyncio.sleep(seconds)

    return app


def starts(directory: str) -> dict[str, list[int]]:
    """task id -> the pids that started it, in log order per process."""
    out: dict[str, list[int]] = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(directory, name)) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 3:
                    out.setdefault(parts[1], []).append(int(parts[2]))
    return out


app = register(Stem())
