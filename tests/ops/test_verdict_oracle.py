"""The verdict oracle: what the operator is shown is true, phase by phase.

Real ``stem worker`` processes and a producer are driven through scripted phases whose
truth is known from outside Stem (which processes run, which are stopped or killed, what
was enqueued, and the task log each worker writes). A long-lived ``Ops`` — as the TUI keeps —
samples the overview and the leases view every ``SAMPLE_S``. Then:

* in a healthy phase, after ``SETTLE_S`` (two heartbeat intervals), no sample shows a
  verdict outside the phase's truth, no lease held by no live worker, no stuck lease;
* a fault is shown within two heartbeat intervals of starting, and cleared within two
  heartbeat intervals of ending (plus one sampling period: the oracle only looks every
  ``SAMPLE_S``).

Runs on SQLite and Redis. Each phase prints one JSON line (samples, false alarms, report
and clear delays); ``docs/ops.md`` describes the rules being checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from stem_core import Stem
from stem_core.errors import StemError
from stem_core.ops import Ops
from tests.ops.apps.oracle import LEASE_S, LOG_DIR_ENV, QUEUE, register, starts
from tests.specs import SPECS, AdapterSpec, require_service

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = "tests.ops.apps.oracle:app"
HEARTBEAT_S = 2.0
SAMPLE_S = 0.5
SETTLE_S = 2 * HEARTBEAT_S
REPORT_WITHIN_S = 2 * HEARTBEAT_S + SAMPLE_S
# Deadlines bound a hang only; nothing is asserted about speed.
DEADLINE_S = 60.0
ORACLE_SPECS = [s for s in SPECS if s.id in ("sqlite", "redis")]


@dataclass
class Seen:
    """One sample of what the operator sees."""

    at: float
    verdict: str
    orphaned: int
    stuck: int
    live: int


@dataclass
class Oracle:
    ops: Ops
    samples: list[Seen] = field(default_factory=list)
    results: list[dict[str, object]] = field(default_factory=list)
    # What the operator got instead of a view (a read that failed); each fails the test.
    errors: list[str] = field(default_factory=list)

    async def sample_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                overview = await self.ops.overview([QUEUE])
                leases = await self.ops.leases(QUEUE)
            except StemError as exc:
                self.errors.append(f"{time.monotonic():.2f}: {exc}")
                await asyncio.sleep(SAMPLE_S)
                continue
            row = overview.queues[0]
            self.samples.append(
                Seen(
                    at=time.monotonic(),
                    verdict=row.verdict,
                    orphaned=row.unaccounted_leases or 0,
                    stuck=sum(1 for lease in leases if lease.stuck),
                    live=overview.live_workers,
                )
            )
            await asyncio.sleep(max(0.0, SAMPLE_S - (time.monotonic() - started)))

    async def _judged_by(self, since: float, seen: Callable[[Seen], bool]) -> None:
        """Wait until a sample since ``since`` satisfies ``seen``, or the bound has passed."""
        while not any(s.at >= since and seen(s) for s in self.samples):
            if time.monotonic() > since + REPORT_WITHIN_S + SAMPLE_S:
                return
            await asyncio.sleep(SAMPLE_S / 5)

    def between(self, start: float, end: float) -> list[Seen]:
        return [s for s in self.samples if start <= s.at <= end]

    def healthy(self, name: str, start: float, end: float, verdicts: set[str]) -> None:
        """No sample after the settle time shows a verdict outside ``verdicts`` or a lease warning."""
        judged = self.between(start + SETTLE_S, end)
        false = [s for s in judged if s.verdict not in verdicts or s.orphaned or s.stuck]
        self.results.append({"phase": name, "samples": len(judged), "false_alarms": len(false)})
        assert judged, f"{name}: no sample after the settle time"
        assert not false, f"{name}: false alarms (truth {sorted(verdicts)}): {false[:5]}"

    async def reported(self, name: str, start: float, shown: Callable[[Seen], bool]) -> float:
        """Seconds from ``start`` to the first sample showing the fault (asserted in bound)."""
        await self._judged_by(start, shown)
        first = next((s for s in self.samples if s.at >= start and shown(s)), None)
        assert first is not None, f"{name}: the fault was never shown; last samples {self.samples[-4:]}; errors {self.errors}"
        delay = first.at - start
        self.results.append({"phase": name, "event": "reported", "after_s": round(delay, 2)})
        assert delay <= REPORT_WITHIN_S, f"{name}: shown {delay:.1f} s after it started (bound {REPORT_WITHIN_S} s)"
        return delay

    async def cleared(self, name: str, end: float, shown: Callable[[Seen], bool]) -> float:
        """Seconds from ``end`` to the first sample no longer showing the fault."""
        await self._judged_by(end, lambda s: not shown(s))
        first = next((s for s in self.samples if s.at >= end and not shown(s)), None)
        assert first is not None, f"{name}: the fault was never cleared; last samples {self.samples[-4:]}; errors {self.errors}"
        delay = first.at - end
        self.results.append({"phase": name, "event": "cleared", "after_s": round(delay, 2)})
        assert delay <= REPORT_WITHIN_S, f"{name}: cleared {delay:.1f} s after it ended (bound {REPORT_WITHIN_S} s)"
        return delay


class Fleet:
    """The ``stem worker`` processes of one test."""

    def __init__(self, url: str, namespace: str, log_dir: Path) -> None:
        self.url = url
        self.namespace = namespace
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **{LOG_DIR_ENV: str(self.log_dir)})
        env.pop("STEM_BROKER_URL", None)
        env.pop("STEM_RESULT_BACKEND_URL", None)
        stderr = open(self.log_dir / f"worker-{len(self.procs)}.stderr", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", APP_PATH, "--queues", QUEUE,
             "--broker", self.url, "--backend", self.url, "--namespace", self.namespace,
             "-c", str(concurrency), "--heartbeat-interval", f"{HEARTBEAT_S:g}s", "--shutdown-grace", "1s",
             "--loglevel", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
        stderr.close()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()


async def until(predicate: Callable[[], object], message: str) -> None:
    """Wait for a fact of the test's own making (a process up, a log line), never for Stem's verdict."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.05)


async def heartbeating(app: Stem, pids: set[int]) -> bool:
    return pids <= {hb.pid for hb in await app.backend.list_heartbeats()}


class Producer:
    """Enqueues ``o.job`` at a steady rate until stopped."""

    def __init__(self, app: Stem) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None

    def run(self, per_second: float, seconds: float = 0.0) -> None:
        self.stop()

        async def loop() -> None:
            gap = 1.0 / per_second
            next_at = time.monotonic()
            while True:
                await self.app.enqueue("o.job", {"seconds": seconds})
                next_at += gap
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        self.task = asyncio.create_task(loop())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


@pytest.fixture(params=ORACLE_SPECS, ids=lambda s: s.id)
def oracle_spec(request: pytest.FixtureRequest) -> AdapterSpec:
    spec: AdapterSpec = request.param
    require_service(spec.service)
    return spec


@pytest.fixture
async def world(oracle_spec: AdapterSpec, tmp_path: Path, namespace: str) -> AsyncIterator[tuple[Stem, Fleet, Oracle]]:
    url = oracle_spec.url(tmp_path)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    app = register(Stem(broker=url, backend=url, namespace=namespace))
    await app.connect()
    fleet = Fleet(url, namespace, log_dir)
    oracle = Oracle(Ops(app.broker, app.backend, persist_rates=False))
    try:
        yield app, fleet, oracle
    finally:
        fleet.stop_all()
        await app.close()
        if oracle_spec.cleanup is not None:
            await oracle_spec.cleanup(url, namespace)


async def pause_for(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return time.monotonic()


@pytest.mark.timeout(400)
async def test_every_verdict_and_warning_is_true(world: tuple[Stem, Fleet, Oracle], oracle_spec: AdapterSpec) -> None:
    app, fleet, oracle = world
    producer = Producer(app)
    w1, w2 = fleet.start(), fleet.start()
    await until(lambda: heartbeating(app, {w1.pid, w2.pid}), "two workers heartbeating")
    sampler = asyncio.create_task(oracle.sample_forever())
    log_dir = str(fleet.log_dir)
    try:
        # 1. Empty: workers up, nothing to do.
        start = time.monotonic()
        end = await pause_for(SETTLE_S + 2)
        oracle.healthy("empty", start, end, {"idle"})

        # 2. Steady flow: 15 short tasks a second, far below capacity.
        producer.run(15)
        start = time.monotonic()
        end = await pause_for(SETTLE_S + 5)
        oracle.healthy("steady", start, end, {"steady"})
        producer.stop()

        # 3. Burst then drain: 200 tasks of 0.1 s at once, then nothing more.
        await app.enqueue_many([("o.job", {"seconds": 0.1}) for _ in range(200)])
        start = time.monotonic()
        await until(lambda: _drained(app), "the burst drained")
        end = await pause_for(1)
        oracle.healthy("burst-drain", start, end, {"draining", "steady", "busy", "idle"})

        # 4. Backlog growing: 30 tasks a second of 0.2 s against 4 slots (20 a second).
        producer.run(30, 0.2)
        start = time.monotonic()
        oracle_end = start + SETTLE_S + 4
        await until(lambda: time.monotonic() > oracle_end, "the growth phase")
        await oracle.reported("growing", start, lambda s: s.verdict == "growing")
        assert not [s for s in oracle.between(start, oracle_end) if s.orphaned or s.stuck], "growing: lease warnings"
        producer.stop()
        await app.broker.purge(QUEUE)
        await until(lambda: _drained(app), "the growth backlog purged and finished")
        end = time.monotonic()
        await oracle.cleared("growing", end, lambda s: s.verdict == "growing")

        # 5. All workers paused, work still arriving.
        await oracle.ops.pause(QUEUE, reason="oracle")
        producer.run(4)
        start = time.monotonic()
        await oracle.reported("paused", start, lambda s: s.verdict == "paused")
        await oracle.ops.resume(QUEUE)
        end = time.monotonic()
        await oracle.cleared("paused", end, lambda s: s.verdict == "paused")
        producer.stop()

        # 6. No workers: both stop (warm), work keeps arriving.
        producer.run(4)
        for proc in (w1, w2):
            proc.send_signal(signal.SIGTERM)
        for proc in (w1, w2):
            await until(lambda p=proc: p.poll() is not None, "a warm stop")
        start = time.monotonic()
        await oracle.reported("no-workers", start, lambda s: s.verdict == "no-workers")
        w3, w4 = fleet.start(), fleet.start()
        await until(lambda: heartbeating(app, {w3.pid, w4.pid}), "two new workers heartbeating")
        end = time.monotonic()
        await oracle.cleared("no-workers", end, lambda s: s.verdict == "no-workers")
        producer.stop()
        await until(lambda: _drained(app), "the queue drained")

        # 7. A worker SIGKILLed while it holds leases: the warning is true until another
        # worker has started the dead worker's tasks again.
        # Which of the two workers claims them is the broker's choice (one may prefetch all
        # four), so the victim is whichever is running one; the other survives for phase 8.
        ids = [await app.enqueue("o.job", {"seconds": 3.0}) for _ in range(4)]
        pids = {w3.pid: w3, w4.pid: w4}
        await until(lambda: any(starts(log_dir).get(i, [None])[0] in pids for i in ids), "w3 or w4 running one of them")
        victim = next(pids[starts(log_dir)[i][0]] for i in ids if starts(log_dir).get(i, [None])[0] in pids)
        survivor = w4 if victim is w3 else w3
        held_by_victim = [i for i in ids if starts(log_dir).get(i) == [victim.pid]]
        victim.kill()
        victim.wait()
        start = time.monotonic()
        shown = lambda s: bool(s.orphaned or s.stuck)  # noqa: E731
        await oracle.reported("sigkill", start, shown)
        explanation = await oracle.ops.explain(held_by_victim[0])
        assert "stopped heartbeating" in json.dumps(explanation.to_dict()), explanation.to_dict()
        await until(
            lambda: all(set(starts(log_dir).get(i, [])) - {victim.pid} for i in ids), "every task run by a live worker"
        )
        end = time.monotonic()
        await oracle.cleared("sigkill", end, shown)
        await until(lambda: _drained(app), "the queue drained")

        # 8. A worker SIGSTOPped while it holds leases, then continued.
        ids = [await app.enqueue("o.job", {"seconds": 3.0}) for _ in range(2)]
        await until(lambda: any(survivor.pid in starts(log_dir).get(i, []) for i in ids), "the survivor running them")
        survivor.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        await oracle.reported("sigstop", start, shown)
        await pause_for(HEARTBEAT_S)  # stopped well past its lease (4 s) before it continues
        survivor.send_signal(signal.SIGCONT)
        end = time.monotonic()
        await oracle.cleared("sigstop", end, shown)
        await until(lambda: _drained(app), "the queue drained")

        # 9. Slow tasks near their lease (0.8 of it): renewed, never flagged.
        w5 = fleet.start()
        await until(lambda: heartbeating(app, {w5.pid}), "w5 heartbeating")
        producer.run(1, 0.8 * LEASE_S)
        start = time.monotonic()
        end = await pause_for(SETTLE_S + 8)
        oracle.healthy("slow-near-lease", start, end, {"steady", "busy", "draining", "idle"})
        producer.stop()
        assert not oracle.errors, f"reads that failed: {oracle.errors}"
    finally:
        producer.stop()
        sampler.cancel()
        for line in oracle.results:
            print(json.dumps({"broker": oracle_spec.id, **line}))


async def _drained(app: Stem) -> bool:
    stats = (await app.broker.queue_stats([QUEUE]))[0]
    return stats.pending + stats.delayed + stats.inflight == 0
