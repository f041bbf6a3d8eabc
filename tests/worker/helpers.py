"""Helpers for worker tests: polling with a deadline, in-process workers, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from stem_core import Broker, Envelope, Stem, TaskState, TaskStatus, Worker

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.worker.apps.tasks:app"
# Deadlines only bound a hang; tests never assert on how fast something happened.
DEADLINE_S = 60.0
POLL_S = 0.02


async def wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], *, timeout: float = DEADLINE_S, message: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        await asyncio.sleep(POLL_S)


async def ready_envelopes(broker: Broker, queue: str) -> list[Envelope]:
    """The envelopes ready in ``queue``: peeked where the broker can; on a broker that
    cannot peek (RabbitMQ) received, once each, and left leased until the test ends."""
    if broker.capabilities.peek:
        return [info.envelope for info in await broker.peek(queue)]
    (stats,) = await broker.queue_stats([queue])
    deliveries = broker.consume([queue], prefetch=max(1, stats.pending))
    out = []
    try:
        for _ in range(stats.pending):
            async with asyncio.timeout(DEADLINE_S):
                out.append((await deliveries.__anext__()).envelope)  # type: ignore[attr-defined]
    finally:
        await deliveries.aclose()  # type: ignore[attr-defined]
    return out


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


@contextlib.asynccontextmanager
async def running(worker: Worker, *, stop: str = "hard") -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` in the background; stop it (``stop`` mode) on exit."""
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: task.done() or worker.ready.is_set(), message="worker start")
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
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.pid} did not exit within {timeout:.0f} s; stderr:\n{self.stderr()}")
            await asyncio.sleep(POLL_S * 5)
        self._stderr.close()
        return self.proc.returncode

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop_now(self) -> None:
        """Teardown: make sure nothing outlives the test."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


async def live_worker_ids(app: Stem) -> set[str]:
    return {hb.worker_id for hb in await app.backend.list_heartbeats()}
