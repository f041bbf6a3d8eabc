"""The scripted incident: a worker is SIGKILLed while it holds tasks.

An operator with nothing but the ``stem`` executable must be able to see it (``inspect
leases`` flags the stuck leases), understand it (``inspect task`` says the holder is dead
and how to fix it) and fix it safely (``requeue --expired-leases``: dry run first, then for
real), after which a live worker runs the tasks. Runs on every cross-process broker with a
result backend that the subprocess tests cover (SQLite, Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from stem_core import TaskState, connect_backend
from tests.cli.apps.incident import LEASE_S, QUEUE
from tests.cli.test_cli_subprocess import ROOT, STEM, SUBPROCESS_SPECS, Exe, ok
from tests.specs import AdapterSpec, require_service

APP = "tests.cli.apps.incident:app"
STALE = "2s"  # --stale-after for the incident: the killed worker beats every 0.5 s
DEADLINE_S = 60.0
POLL_S = 0.25
TASKS = 3


class WorkerProc:
    def __init__(self, exe: Exe, worker_id: str, log: Path, *, fast: bool) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
        env.update({"INCIDENT_LOG": str(log), "INCIDENT_FAST": "1" if fast else "0"})
        self.stderr_path = log.with_name(f"{worker_id}.stderr")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [STEM, "worker", "--app", APP, "-q", QUEUE, "-c", "2", "--worker-id", worker_id, "--heartbeat-interval", "500ms",
             "--broker", exe.url, "--backend", exe.backend_url or exe.url, "--namespace", exe.namespace,
             "--loglevel", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr,
        )

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=DEADLINE_S)
        self._stderr.close()
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]


def poll(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


@pytest.fixture(params=SUBPROCESS_SPECS, ids=lambda s: s.id)
def incident(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[tuple[Exe, Path, list[WorkerProc]]]:
    spec: AdapterSpec = request.param
    require_service(spec.service)
    url = spec.url(tmp_path)
    procs: list[WorkerProc] = []
    # Leases long enough that none of the killed worker's runs out during the test: they
    # are stuck because their holder is dead, not because they expired.
    broker_url = f"{url}{'&' if '?' in url else '?'}lease_seconds={LEASE_S:.0f}"
    yield Exe(url=broker_url, namespace=namespace, backend_url=url), tmp_path / "runs.log", procs
    for proc in procs:
        proc.stop()
    if spec.cleanup is not None:
        asyncio.run(spec.cleanup(url, namespace))


def statuses(exe: Exe, ids: list[str]) -> dict[str, str | None]:
    async def go() -> dict[str, str | None]:
        backend = await connect_backend(exe.backend_url or exe.url, namespace=exe.namespace)
        try:
            return {i: (s.state.value if (s := await backend.get_status(i)) else None) for i in ids}
        finally:
            await backend.close()

    return asyncio.run(go())


def test_a_killed_worker_is_seen_explained_and_repaired(incident: tuple[Exe, Path, list[WorkerProc]]) -> None:
    exe, log, procs = incident
    # Given worker A running three hanging tasks (two active, one prefetched)
    worker_a = WorkerProc(exe, "worker-a", log, fast=False)
    procs.append(worker_a)
    ids = [ok(exe("enqueue", "incident.hang", "--arg", f"n={i}", "-q", QUEUE)).strip() for i in range(TASKS)]

    def a_holds_all() -> bool:
        workers = json.loads(ok(exe("inspect", "workers", "--json")))
        return any(w["worker_id"] == "worker-a" and w["active"] == 2 and w["reserved"] == 1 for w in workers)

    poll(a_holds_all, "worker-a to hold every task")
    # When it is SIGKILLed
    assert worker_a.stop(signal.SIGKILL) == -signal.SIGKILL

    # Then `stem inspect leases` flags every lease as stuck once its heartbeat is stale
    def stuck_leases() -> list[dict[str, Any]]:
        leases = json.loads(ok(exe("inspect", "leases", "--json", "--stale-after", STALE)))
        return leases if len(leases) == TASKS and all(lease["stuck"] for lease in leases) else []

    leases = poll(stuck_leases, "the leases to be flagged stuck")
    assert {lease["holder"] for lease in leases} == {"worker-a"} and {lease["id"] for lease in leases} == set(ids)
    assert all(lease["expires_in"] > 0 and "heartbeat" in lease["stuck_reason"] for lease in leases)
    table = ok(exe("inspect", "leases", QUEUE, "--stale-after", STALE))
    assert table.count("STUCK: holder worker-a stopped heartbeating") == TASKS and "3 stuck" in table

    # And `stem inspect task ID` says why it is not running and how to fix it
    why = json.loads(ok(exe("inspect", "task", ids[0], "--json", "--stale-after", STALE)))
    assert why["state"] == "leased" and why["lease"]["holder"] == "worker-a"
    assert why["blockers"][0]["code"] == "dead-holder" and why["blockers"][0]["fix"] == f"stem requeue {QUEUE} --id {ids[0]}"
    assert "held by a dead worker" in ok(exe("inspect", "task", ids[0], "--stale-after", STALE))
    row = json.loads(ok(exe("inspect", "queues", "--json", "--sample", "0", "--stale-after", STALE)))["queues"][0]
    assert row["inflight"] == TASKS and row["unaccounted_leases"] == TASKS

    # Given a healthy worker B that cannot take them while they are leased
    worker_b = WorkerProc(exe, "worker-b", log, fast=True)
    procs.append(worker_b)
    poll(lambda: any(w["worker_id"] == "worker-b" and not w["stale"]
                     for w in json.loads(ok(exe("inspect", "workers", "--json")))), "worker-b to start")
    # When the operator previews the requeue
    dry = json.loads(ok(exe("requeue", QUEUE, "--expired-leases", "--dry-run", "--json", "--stale-after", STALE)))
    # Then it names the three leases and changes nothing
    assert dry["dry_run"] and dry["count"] == TASKS and sorted(dry["detail"]["ids"]) == sorted(ids)
    assert len(json.loads(ok(exe("inspect", "leases", "--json", "--stale-after", STALE)))) == TASKS
    # When it runs for real
    done = json.loads(ok(exe("requeue", QUEUE, "--expired-leases", "--yes", "--json", "--stale-after", STALE,
                             "--reason", "worker-a was SIGKILLed")))
    assert done["count"] == TASKS and not done["dry_run"] and done["audit_id"]
    # Then worker B runs every one of them
    poll(lambda: all(s == TaskState.SUCCEEDED.value for s in statuses(exe, ids).values()), "the tasks to succeed")
    runs = [line.split() for line in log.read_text().splitlines()]
    assert {task for _, task, pid in runs if int(pid) == worker_b.proc.pid} == set(ids), worker_b.stderr()
    assert json.loads(ok(exe("inspect", "leases", "--json"))) == []
    audit = json.loads(ok(exe("inspect", "audit", "--json")))
    assert audit[0]["action"] == "requeue" and audit[0]["reason"] == "worker-a was SIGKILLed"
    assert worker_b.stop(signal.SIGTERM) == 0, worker_b.stderr()
