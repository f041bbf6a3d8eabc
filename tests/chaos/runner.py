"""The chaos runner and fault injector: starts producer and worker processes, injects the
scenario's faults, drains, reads the final state and runs the checker.

``python -m tests.chaos run --profile ci|full --broker B --scenario N [--dir D]``
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from tests.chaos.checker import check
from tests.chaos.history import HISTORY_DIR_ENV, History, HistoryTail, read_dir
from tests.chaos.tasks import LEASE_ENV, LEASE_S

ROOT = Path(__file__).resolve().parents[2]
BROKERS = ("sqlite", "redis", "postgres", "rabbitmq", "sqs")
# Task leases per broker (default LEASE_S): moto answers slowly under load.
LEASES = {"sqs": 6.0}
EXIT_TIMEOUT_S = 30.0
POLL_S = 0.2
# Brokers whose ack has no reply (AMQP basic.ack): a worker killed right after its ack
# returned may take the ack with it, and the task runs again (the checker knows).
UNCONFIRMED_ACKS = ("rabbitmq",)
# The drain looks up the final status of this many unsettled ids at most per poll, once
# at most ten times as many are left.
STATUS_LOOKUPS = 50


@dataclass(frozen=True)
class Profile:
    name: str
    scale: float  # task counts and fault durations
    kill_tasks: int = 5000
    kill_seconds: float = 30.0
    kill_every: float = 2.0
    kill_workers: int = 4
    pause_tasks: int = 4
    pause_rounds: int = 1
    net_tasks: int = 400
    due_tasks: int = 20000  # scenario 6: tasks falling due at the same instant
    soak_seconds: float = 120.0
    drain_timeout: float = 180.0


PROFILES = {
    # ci: the figures, what the pytest suite runs (scenario 1: 5,000 tasks, a kill
    # every 2 s for 30 s; scenario 6: 20,000 due at once; scenario 7: 2 minutes per broker)
    "ci": Profile("ci", 1.0),
    # full: 10x the ci run
    "full": Profile("full", 10.0, kill_tasks=50000, kill_seconds=300.0, pause_tasks=40, pause_rounds=10,
                    net_tasks=4000, due_tasks=200000, soak_seconds=1200.0, drain_timeout=900.0),
}


class Proc:
    """A producer or worker OS process of this run."""

    def __init__(self, run: "Run", role: str, module: str, *args: str) -> None:
        env = dict(os.environ)
        env[HISTORY_DIR_ENV] = str(run.dir)
        env[LEASE_ENV] = str(run.lease)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.role = role
        self.stderr_path = run.dir / f"{role}-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.pid = self.proc.pid
        run.history.record("spawn", target=self.pid, role=role)

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def wait(self, timeout: float = EXIT_TIMEOUT_S) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S / 2)
        return self.proc.poll()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]


@dataclass
class Run:
    broker: str
    profile: Profile
    dir: Path
    broker_url: str
    backend_url: str
    namespace: str
    history: History
    procs: list[Proc] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific results
    problems: list[str] = field(default_factory=list)  # scenario-specific violations
    lease: float = LEASE_S
    tail: HistoryTail = field(init=False)

    def __post_init__(self) -> None:
        self.tail = HistoryTail(self.dir)

    # -- processes ----------------------------------------------------------------

    def worker(self, *args: str, broker_url: str | None = None, backend_url: str | None = None) -> Proc:
        proc = Proc(self, "worker", "tests.chaos.worker", "--broker", broker_url or self.broker_url,
                    "--backend", backend_url or self.backend_url, "--namespace", self.namespace, *args)
        self.procs.append(proc)
        return proc

    def producer(self, count: int, *, seconds: float = 0.0, sleep: float = 0.005, prefix: str = "p0",
                 batch: int = 50, extra: tuple[str, ...] = ()) -> Proc:
        proc = Proc(self, "producer", "tests.chaos.producer", "--broker", self.broker_url, "--backend",
                    self.backend_url, "--namespace", self.namespace, "--count", str(count), "--seconds",
                    str(seconds), "--sleep", str(sleep), "--prefix", prefix, "--batch", str(batch), *extra)
        self.procs.append(proc)
        return proc

    def kill(self, proc: Proc) -> None:
        self.history.record("kill", target=proc.pid)
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()

    def pause(self, proc: Proc) -> None:
        self.history.record("pause", target=proc.pid)
        proc.proc.send_signal(signal.SIGSTOP)

    def resume(self, proc: Proc) -> None:
        proc.proc.send_signal(signal.SIGCONT)
        self.history.record("resume", target=proc.pid)

    async def stop(self, procs: list[Proc]) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL what did not exit in time."""
        for proc in procs:
            if proc.alive():
                proc.proc.send_signal(signal.SIGCONT)
                proc.proc.send_signal(signal.SIGTERM)
        for proc in procs:
            code = await proc.wait()
            if code is None:
                self.problems.append(f"{proc.role} {proc.pid} did not exit within {EXIT_TIMEOUT_S:g} s of SIGTERM")
                self.kill(proc)
            elif code not in (0, -signal.SIGKILL):
                self.problems.append(f"{proc.role} {proc.pid} exited {code}: {proc.tail()[-300:]}")

    # -- reading the histories while the run goes on ----------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every event so far, ordered by time. Read incrementally (only what each file
        gained since the last call): the full profile's histories reach a million lines,
        and parsing them whole every poll made the soak's 5 s windows last 12 s."""
        return self.tail.events()

    async def until(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if check(self.events()):
                return True
            if time.monotonic() >= deadline:
                self.problems.append(f"timed out after {timeout:g} s waiting for {what}")
                return False
            await asyncio.sleep(POLL_S)

    async def drained(self, timeout: float) -> bool:
        """Wait until every confirmed enqueue expected to complete was acked (or the timeout);
        scenario 5 waits for its dead letters itself.

        A worker killed after its ack but before recording it leaves no ``ack`` line: ids
        still unsettled in the histories are looked up in the result backend (a final
        status is written before the ack)."""
        from stem_core import Stem

        app = Stem(broker=self.broker_url, backend=self.backend_url, namespace=self.namespace)
        settled_by_status: set[str] = set()

        async def done() -> bool:
            events = self.events()
            if any(p.role == "producer" and p.alive() for p in self.procs):
                return False
            dead_expected = {e["id"] for e in events if e["type"] == "invoke" and e.get("expect") == "dead"}
            confirmed = {e["id"] for e in events if e["type"] == "ok"} - dead_expected
            settled = {e["id"] for e in events if (e["type"] == "ack" and not e.get("error")) or e["type"] == "dead"}
            missing = confirmed - settled - settled_by_status
            if missing and len(missing) <= STATUS_LOOKUPS * 10:
                # A few at a time (a full-profile run lost 62 ack lines to 150 kills), and
                # only near the end: while thousands are queued, none of them is settled.
                for task_id in sorted(missing)[:STATUS_LOOKUPS]:
                    status = await app.backend.get_status(task_id)
                    if status is not None and status.state.value in ("succeeded", "failed"):
                        settled_by_status.add(task_id)
                missing -= settled_by_status
            return not missing

        deadline = time.monotonic() + timeout
        try:
            await app.connect()
            while not await done():
                if time.monotonic() >= deadline:
                    self.problems.append(f"timed out after {timeout:g} s waiting for the drain (every confirmed task settled)")
                    return False
                await asyncio.sleep(POLL_S * 5)
            return True
        finally:
            await app.close()

    # -- the end ----------------------------------------------------------------------

    async def record_final_state(self, expected_dead: int = 0, queues: tuple[str, ...] = ("default",),
                                 prefix: str = "") -> None:
        """The drain event (queue counters) and every invoked task's final status."""
        from stem_core import Stem
        from tests.chaos.tasks import register

        app = register(Stem(broker=self.broker_url, backend=self.backend_url, namespace=self.namespace))
        try:
            await app.connect()
            stats = await app.broker.queue_stats(list(queues))
            totals: dict[str, int | None] = {}
            for key in ("pending", "delayed", "inflight", "dead"):
                values = [getattr(s, key) for s in stats]
                totals[key] = None if any(v is None for v in values) else sum(values)
            if any(s.approximate for s in stats):
                # SQS counts the messages in its dead queue; a message buried twice (its
                # burier outran by a slow moto, docs/reliability.md) is one dead letter in
                # the listing, which is what an operator acts on: count that, exactly.
                totals["dead"] = sum([await _listed_dead(app.broker, queue) for queue in queues])
            self.history.record("drain", expected_dead=expected_dead, **totals)
            invoked = [e["id"] for e in self.events() if e["type"] == "invoke" and e["id"].startswith(prefix)]
            for task_id in invoked:
                status = await app.backend.get_status(task_id)
                self.history.record("status", id=task_id, state=None if status is None else status.state.value)
        finally:
            await app.close()


async def _listed_dead(broker: Any, queue: str) -> int:
    """How many dead letters ``list_dead_letters`` shows for ``queue`` (every page)."""
    count, offset = 0, 0
    while offset is not None:
        page = await broker.list_dead_letters(queue, limit=100, offset=offset)
        count += len(page.entries)
        offset = page.next_offset
    return count


def _specs() -> dict[str, Any]:
    from tests.specs import SPECS

    return {s.id: s for s in SPECS}


def _start_service(spec: Any) -> None:
    """Start a server the tests start themselves (moto); a plain check elsewhere."""
    from tests.specs import STARTERS, service_up

    for service in (spec.service, getattr(spec.paired_backend, "service", None)):
        if service in STARTERS:
            STARTERS[service]()
        elif service is not None and not service_up(service):
            raise RuntimeError(f"{service} is not reachable")


async def run_scenario(profile: str, broker: str, scenario: int, directory: Path | None = None) -> dict[str, Any]:
    """Run one scenario; returns the checker's summary with the run's figures."""
    from tests.chaos.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario} is not built (built: {sorted(SCENARIOS)})")
    spec = _specs()[broker]
    _start_service(spec)
    directory = Path(directory or tempfile.mkdtemp(prefix=f"chaos-{broker}-{scenario}-"))
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.jsonl"):
        old.unlink()
    namespace = "chaos" + uuid.uuid4().hex[:10]
    broker_url = spec.url(directory)
    paired = spec.backend_spec()
    backend_url = paired.url(directory)
    began = time.monotonic()
    with History(directory, "runner", name="runner") as history:
        run = Run(broker, PROFILES[profile], directory, broker_url, backend_url, namespace, history,
                  lease=LEASES.get(broker, LEASE_S))
        history.record("run", broker=broker, scenario=scenario, profile=profile, lease=run.lease,
                       unconfirmed_acks=broker in UNCONFIRMED_ACKS)
        try:
            await SCENARIOS[scenario](run, spec)
        finally:
            for proc in run.procs:
                proc.close()
            await _cleanup(spec, broker_url, backend_url, namespace)
    summary = check(read_dir(directory))
    summary["violations"].extend(run.problems)
    summary["valid"] = not summary["violations"]
    summary = {"broker": broker, "scenario": scenario, "profile": profile,
               "seconds": round(time.monotonic() - began, 1), **summary, **run.extra, "dir": str(directory)}
    (directory / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


async def _cleanup(spec: Any, broker_url: str, backend_url: str, namespace: str) -> None:
    cleanups: list[Awaitable[None]] = []
    if spec.cleanup is not None:
        cleanups.append(spec.cleanup(broker_url, namespace))
    paired = spec.paired_backend
    if not spec.has_backend and paired is not None and paired.cleanup is not None:
        cleanups.append(paired.cleanup(backend_url, namespace))
    for cleanup in cleanups:
        try:
            await cleanup
        except Exception as exc:  # noqa: BLE001 - leftovers on a test server are not a verdict
            print(f"cleanup of {namespace} failed: {exc}", file=sys.stderr)


def rng_for(run: Run) -> random.Random:
    return random.Random(run.namespace)
