"""The task app run by ``stem worker`` processes in tests/worker.

``register(app)`` adds every task to an app, so the producer side of a test registers the
same definitions and its envelopes carry the same queues and leases. Every execution
appends ``start|finish <task id> <pid>`` lines to ``$STEM_TEST_LOG_DIR/<pid>.log``
(unbuffered ``O_APPEND`` writes, so a SIGKILL cannot lose a written line).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from stem_core import Stem
from stem_core.worker import TaskContext

LOG_DIR_ENV = "STEM_TEST_LOG_DIR"
# Short leases so a killed worker's deliveries come back quickly.
KILL_LEASE_S = 2.0
BLOCK_LEASE_S = 1.0
SIDE_QUEUE = "side"
# A task name and a message that a log line must keep intact: quotes, a newline, an
# escape sequence, a bidi override, a backslash.
ODD_TASK = 't.odd "quoted"\nname\x1b[31m\u202e\\'
ODD_MESSAGE = 'he said "hi"\r\nforged: line\x07\x1b]0;title\x07 \u2028 end\\'

_fd: int | None = None


def record(event: str, task_id: str) -> None:
    global _fd
    directory = os.environ.get(LOG_DIR_ENV)
    if not directory:
        return
    if _fd is None:
        _fd = os.open(os.path.join(directory, f"{os.getpid()}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{event} {task_id} {os.getpid()}\n".encode())


def register(app: Stem) -> Stem:
    @app.task(name="t.noop", visibility_timeout=KILL_LEASE_S)
    async def noop(ctx: TaskContext, i: int = 0, sleep: float = 0.0) -> int:
        record("start", ctx.task_id)
        if sleep:
            await asyncio.sleep(sleep)
        record("finish", ctx.task_id)
        return i

    @app.task(name="t.side", queue=SIDE_QUEUE)
    async def side(ctx: TaskContext) -> str:
        record("start", ctx.task_id)
        record("finish", ctx.task_id)
        return "side"

    @app.task(name="t.block_sleep", visibility_timeout=BLOCK_LEASE_S)
    def block_sleep(ctx: TaskContext, seconds: float) -> str:
        record("start", ctx.task_id)
        time.sleep(seconds)
        record("finish", ctx.task_id)
        return "slept"

    @app.task(name="t.block_cpu", visibility_timeout=BLOCK_LEASE_S)
    def block_cpu(ctx: TaskContext, seconds: float) -> int:
        record("start", ctx.task_id)
        end = time.monotonic() + seconds
        spins = 0
        while time.monotonic() < end:
            spins += sum(range(1000)) > 0
        record("finish", ctx.task_id)
        return spins

    @app.task(name="t.poison", max_retries=2, retry_backoff=0.05)
    def poison(ctx: TaskContext) -> None:
        record("start", ctx.task_id)
        raise RuntimeError("poison: always fails")

    @app.task(name="t.crash", visibility_timeout=KILL_LEASE_S)
    def crash(ctx: TaskContext) -> None:
        record("start", ctx.task_id)
        os._exit(1)  # kills its own worker process, every time

    @app.task(name="t.slow")
    async def slow(ctx: TaskContext, seconds: float) -> str:
        record("start", ctx.task_id)
        await asyncio.sleep(seconds)
        record("finish", ctx.task_id)
        return "done"

    @app.task(name=ODD_TASK)
    async def odd(ctx: TaskContext, message: str) -> str:
        # A line of the task's own, with the text it was given (docs/metrics.md: JSON logs).
        logging.getLogger("tests.app").warning("%s", message)
        return "logged"

    return app


def read_log(directory: str) -> list[tuple[str, str, int]]:
    """Every ``(event, task_id, pid)`` written by any process."""
    events: list[tuple[str, str, int]] = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".log"):
            with open(os.path.join(directory, name)) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 3:  # a torn last line of a killed process is skipped
                        events.append((parts[0], parts[1], int(parts[2])))
    return events


def summarize(events: list[tuple[str, str, int]]) -> dict[str, Any]:
    starts: dict[str, list[int]] = {}
    finishes: dict[str, list[int]] = {}
    for event, task_id, pid in events:
        (starts if event == "start" else finishes).setdefault(task_id, []).append(pid)
    return {"starts": starts, "finishes": finishes}


app = register(Stem())
