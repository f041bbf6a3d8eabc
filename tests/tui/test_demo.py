"""``stem demo`` headless on SQLite: work flows (successes, dead letters, a stalled
queue), and every process it started is gone afterwards — after its duration, on SIGTERM
and on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stem_tui.cli.demo import Stop

pytestmark = pytest.mark.slow

# Deadlines bound a hang; no test asserts how fast anything happened.
DEADLINE_S = 90.0
POLL_S = 0.1


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
    env.update({"STEM_BROKER_URL": "sqlite://" + str(tmp_path / "demo.db"), "STEM_DEMO_INVOICE_FAILURE_RATE": "1.0",
                "STEM_DEMO_LONG_TASK_S": "600"})
    return env


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still there: a zombie counts as gone (only its parent, the demo, could reap it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def pids_in(output: str) -> list[int]:
    match = re.search(r"started pids ([\d ]+)", output)
    assert match, output
    return [int(p) for p in match.group(1).split()]


def stem(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "stem_tui.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_headless_demo_runs_for_its_duration_and_stops_everything(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "stem_tui.cli.main", "demo", "--no-tui", "--duration", "6s"],
                          env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped 4 process(es)" in done.stdout and "namespace demo" in done.stdout
    assert "QUEUE" in done.stdout  # the overview, taken while the workers still ran
    assert all(gone(pid) for pid in pids_in(done.stdout))


def queues_now(env: dict[str, str]) -> dict[str, dict[str, object]]:
    return {q["queue"]: q for q in json.loads(stem(env, "inspect", "queues", "--json", "--namespace", "demo"))["queues"]}


def wait_for_the_mix(env: dict[str, str]) -> dict[str, dict[str, object]]:
    """Until the demo shows what it is for: dead letters in billing, a backlog behind the
    long export, work done elsewhere."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        queues = queues_now(env)
        billing, exports = queues.get("billing", {}), queues.get("exports", {})
        if (int(billing.get("dead", 0)) > 0 and int(exports.get("inflight", 0)) > 0  # type: ignore[call-overload]
                and int(exports.get("pending", 0)) > 0):  # type: ignore[call-overload]
            return queues
        if time.monotonic() > deadline:
            raise AssertionError(f"the demo never showed its mix: {queues}")
        time.sleep(1.0)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_demo_flows_and_stops_its_processes_when_stopped(tmp_path: Path, how: signal.Signals) -> None:
    env = demo_env(tmp_path)
    demo = subprocess.Popen([sys.executable, "-m", "stem_tui.cli.main", "demo", "--no-tui", "--duration", "600s"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        lines = []
        deadline = time.monotonic() + DEADLINE_S
        while not any("started pids" in line for line in lines) and time.monotonic() < deadline:
            lines.append(demo.stdout.readline())
        pids = pids_in("".join(lines))
        if how == signal.SIGTERM:
            wait_for_the_mix(env)
            dead = json.loads(stem(env, "dlq", "list", "billing", "--json", "--namespace", "demo"))
            assert {e["reason"] for e in dead["entries"]} == {"max-retries-exhausted"}
        demo.send_signal(how)
        output = "".join(lines) + demo.communicate(timeout=DEADLINE_S)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()  # else a failure here leaks the pipe into the next test's warnings
    assert "stopped 4 process(es)" in output, output
    assert all(gone(pid) for pid in pids)


def test_a_signal_that_lands_in_a_finalizer_still_stops_the_headless_demo() -> None:
    # Given the headless demo's signal handling
    stop, before = Stop(), signal.getsignal(signal.SIGINT)

    class Dropped:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # Python runs the handler here, inside the finalizer
                pass

    with stop.handling(headless=True):
        # When Ctrl-C lands while a finalizer runs (where Python drops a KeyboardInterrupt)
        Dropped()
        # Then the demo sees it
        assert stop.wait(DEADLINE_S) and stop.signum == signal.SIGINT
    # And the handler is given back afterwards
    assert signal.getsignal(signal.SIGINT) is before
