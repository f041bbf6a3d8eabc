"""Helpers for worker tests: in-process workers started on their readiness, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator

from stem_core import Delivery, Envelope, Stem, TaskState, TaskStatus, Worker
from tests.support import DEADLINE_S, eventually

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.worker.apps.tasks:app"
# How often a test looks whether a worker process has exited.
EXIT_POLL_S = 0.1


async def statuses(app: Stem, ids: list[str]) -> dict[str, TaskStatus | None]:
    return {task_id: await app.backend.get_status(task_id) for task_id in ids}


def one_active_two_reserved(worker: Worker) -> bool:
    """A concurrency-1, prefetch-3 worker has filled up: three deliveries held, the first
    one running. A delivery is held as soon as it is claimed but becomes active only when
    its handler next runs; a stop or pause in between would find nothing active."""
    states = [h.state for h in worker.held]
    return len(states) == 3 and states.count("active") == 1


async def all_in_state(app: Stem, ids: list[str], *states: TaskState) -> bool:
    for task_id in ids:
        status = await app.backend.get_status(task_id)
        if status is None or status.state not in states:
            return False
    return True


async def start(worker: Worker) -> asyncio.Task[None]:
    """Run ``worker`` in the background and return once it is ready (``worker.ready``: its
    persisted state read, first heartbeat written, control subscription open, fetching),
    or once it has exited, so a failed start surfaces instead of hanging."""
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=DEADLINE_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    assert done, f"worker {worker.worker_id} neither became ready nor exited within {DEADLINE_S:g} s"
    return task


@contextlib.asynccontextmanager
async def running(worker: Worker, *, stop: str = "hard") -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` in the background once ready; stop it (``stop`` mode) on exit."""
    task = await start(worker)
    try:
        yield task
    finally:
        if not task.done():
            worker.request_stop(stop)
        await asyncio.wait_for(asyncio.shield(task), DEADLINE_S)


class WorkerProcess:
    """One real ``stem worker`` process."""

    def __init__(self, broker_url: str, namespace: str, log_dir: Path, *extra: str, backend_url: str | None = None) -> None:
        env = dict(os.environ)
        env["STEM_TEST_LOG_DIR"] = str(log_dir)
        env.pop("STEM_BROKER_URL", None)
        env.pop("STEM_RESULT_BACKEND_URL", None)
        command = [
            sys.executable, "-m", "stem_tui.cli.main", "worker",
            "--app", APP_PATH,
            "--broker", broker_url,
            "--backend", backend_url or broker_url,
            "--namespace", namespace,
            "--heartbeat-interval", "1s",
            "--loglevel", "warning",
            *extra,
        ]
        self.stderr_path = log_dir / f"worker-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.pid = self.proc.pid
        self.worker_id: str | None = None  # <hostname>-<pid> by default, set by the caller

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    async def wait(self, timeout: float = DEADLINE_S) -> int:
        try:
            await eventually(lambda: self.proc.poll() is not None, timeout=timeout, interval=EXIT_POLL_S,
                             message=f"worker {self.pid} to exit")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stderr:\n{self.stderr()}") from None
        self._stderr.close()
        return self.proc.returncode

    def log(self) -> str:
        """Everything the worker has logged so far (its stderr)."""
        return self.stderr_path.read_text(errors="replace")

    def stderr(self) -> str:
        """The tail of the log, for failure messages."""
        return self.log()[-4000:]

    def stop_now(self) -> None:
        """Teardown: make sure nothing outlives the test."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


async def ready_envelopes(app: Stem, queue: str = "default") -> list[Envelope]:
    """The envelopes ready on ``queue``: peeked, or, where the broker cannot peek (SQS,
    RabbitMQ), received and handed straight back (``requeue`` of deliveries this process
    holds; their attempt is left as it was)."""
    broker = app.broker
    if broker.capabilities.peek:
        return [m.envelope for m in await broker.peek(queue, state="pending")]
    count = (await broker.queue_stats([queue]))[0].pending
    taken: list[Delivery] = []
    if count:
        stream = broker.consume([queue], prefetch=count)
        try:
            async with asyncio.timeout(DEADLINE_S):
                async for delivery in stream:
                    taken.append(delivery)
                    if len(taken) == count:
                        break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        await broker.requeue(queue, [d.envelope.id for d in taken])
    return [d.envelope for d in taken]


async def live_worker_ids(app: Stem) -> set[str]:
    return {hb.worker_id for hb in await app.backend.list_heartbeats()}
