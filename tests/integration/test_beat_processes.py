"""Three real ``stem beat`` processes on one schedule (every 1 s, catch_up=all) while
one of them is SIGKILLed and replaced every second or so: no due time is missed and none
is enqueued twice (``docs/schedules.md``), on SQLite, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from stem_core import Stem
from stem_core.clock import utcnow
from stem_core.schedules import Schedule, ScheduleBook, task_id_for
from tests.specs import SPECS, AdapterSpec, require_service
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
BEAT_SPECS = [s for s in SPECS if s.id in ("sqlite", "redis", "postgres")]
LEASE = "2s"
CHAOS_S = 5.0
KILL_EVERY_S = 1.0
ENQUEUED = re.compile(r"enqueued (sched-[0-9a-f]+) for")


class BeatProcess:
    def __init__(self, url: str, namespace: str, log_dir: Path, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("STEM_BROKER_URL", "STEM_RESULT_BACKEND_URL")}
        env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stem_tui.cli.main", "beat", "--broker", url, "--backend", url, "--namespace",
             namespace, "--lease", LEASE, "--beat-id", name, "--loglevel", "info"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def running(self) -> bool:
        return " running (lease" in self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: self.proc.poll() is not None, message=f"beat {self.proc.pid} to exit")
        self._log.close()
        return self.proc.returncode


@pytest.fixture(params=BEAT_SPECS, ids=lambda s: s.id)
def spec(request: pytest.FixtureRequest) -> AdapterSpec:
    require_service(request.param.service)
    return request.param


async def test_three_beats_with_sigkills_enqueue_each_due_time_once(spec: AdapterSpec, tmp_path: Path,
                                                                     namespace: str) -> None:
    url = spec.url(tmp_path)
    app = Stem(broker=url, backend=url, namespace=namespace)
    beats: list[BeatProcess] = []
    try:
        await app.connect()
        book = ScheduleBook(app.backend)
        created = await book.create(Schedule.new("tick", "beat.tick", "every 1s", now=utcnow(), catch_up="all"))
        assert created is not None
        names = (f"b{i}" for i in itertools.count())
        beats = [BeatProcess(url, namespace, tmp_path, next(names)) for _ in range(3)]
        # Chaos: every KILL_EVERY_S one beat (in turn) is SIGKILLed and a new one started.
        deadline = time.monotonic() + CHAOS_S
        victim = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(KILL_EVERY_S)
            beats[victim % 3].kill()
            beats.append(BeatProcess(url, namespace, tmp_path, next(names)))
            beats[victim % 3], beats[-1] = beats[-1], beats[victim % 3]
            victim += 1
        chaos_end = utcnow()

        # The survivors catch up on everything due so far (expired claims included).
        async def caught_up() -> bool:
            s = await book.get("tick")
            return s is not None and s.last_run is not None and s.last_run >= chaos_end
        await eventually(caught_up, message="the beats to catch up after the kills")
        # A beat stops cleanly on SIGTERM once it runs (its handler is installed by then).
        await eventually(lambda: all(b.running() for b in beats[:3]), message="the surviving beats to run")
        for beat in beats[:3]:
            assert await beat.stop() == 0
        stored = await book.get("tick")
        assert stored is not None and stored.anchor is not None and stored.last_run is not None

        # Every due time from the first to the last run has its task, exactly one message each.
        count = round((stored.last_run - stored.anchor).total_seconds())
        dues = [stored.anchor + timedelta(seconds=k) for k in range(1, count + 1)]
        ids = [task_id_for(stored, due) for due in dues]
        missing = [due.isoformat() for due, tid in zip(dues, ids) if await app.backend.get_status(tid) is None]
        assert not missing, f"due times never enqueued: {missing}"
        assert (await app.broker.queue_stats(["default"]))[0].pending == len(ids)
        logged = Counter(m for path in tmp_path.glob("b*.log") for m in ENQUEUED.findall(path.read_text()))
        assert set(logged) <= set(ids)
        assert all(n == 1 for n in logged.values()), {k: n for k, n in logged.items() if n > 1}
        assert len(beats) >= 6  # the kills happened
    finally:
        for beat in beats:
            beat.kill()
        await app.close()
        if spec.cleanup is not None:
            await spec.cleanup(url, namespace)


async def test_worker_with_beat_runs_the_schedules(tmp_path: Path, namespace: str) -> None:
    url = f"sqlite:///{tmp_path / 'stem.db'}"
    app = Stem(broker=url, backend=url, namespace=namespace)
    env = {k: v for k, v in os.environ.items() if k not in ("STEM_BROKER_URL", "STEM_RESULT_BACKEND_URL")}
    env["PYTHONPATH"] = str(ROOT)
    log = open(tmp_path / "worker.log", "wb")
    proc = None
    try:
        await app.connect()
        book = ScheduleBook(app.backend)
        await book.create(Schedule.new("tick", "t.noop", "every 1s", now=utcnow()))
        proc = subprocess.Popen(
            [sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", "tests.worker.apps.tasks:app", "--beat",
             "--broker", url, "--backend", url, "--namespace", namespace, "--loglevel", "info"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)

        async def two_ran() -> bool:
            s = await book.get("tick")
            if s is None or s.last_task_id is None or s.last_run is None or s.last_run < s.anchor + timedelta(seconds=2):
                return False
            status = await app.backend.get_status(s.last_task_id)
            return status is not None and status.state.value == "succeeded"
        await eventually(two_ran, message="the worker's beat to enqueue and its worker to run the task")
        proc.send_signal(signal.SIGTERM)
        await eventually(lambda: proc.poll() is not None, message="the worker to exit")
        assert proc.returncode == 0, (tmp_path / "worker.log").read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        await app.close()
