"""``stem worker --processes N``: the supervisor and its worker processes.

Unit cases drive ``Supervisor`` with tiny Python commands; the end-to-end cases run a real
``stem worker --processes 2`` on SQLite (the embedded default) and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from stem_core import Stem, TaskState
from stem_core.worker import supervisor as supervisor_module
from stem_core.worker.supervisor import Supervisor, child_argv
from tests.specs.postgres import SPEC as POSTGRES_SPEC
from tests.specs.rabbitmq import SPEC as RABBITMQ_SPEC
from tests.specs.redis import SPEC as REDIS_SPEC
from tests.specs import AdapterSpec
from tests.specs.sqlite import SPEC as SQLITE_SPEC
from tests.specs.sqs import SPEC as SQS_SPEC
from tests.support import eventually
from tests.worker.apps.tasks import read_log, summarize
from tests.worker.helpers import WorkerProcess, all_in_state

Spawn = Callable[..., WorkerProcess]
E2E_SPECS = pytest.mark.parametrize("process_spec", [SQLITE_SPEC, REDIS_SPEC], ids=lambda s: s.id, indirect=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) is not alive either.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- the child command line -------------------------------------------------------------


def test_child_argv_drops_the_supervisor_options_in_both_forms() -> None:
    argv = ["worker", "--app", "m:app", "--processes", "3", "-c", "2", "--processes=4", "--worker-id", "w", "--burst"]
    assert child_argv(argv, ("--processes", "--worker-id")) == ["worker", "--app", "m:app", "-c", "2", "--burst"]


def test_child_argv_drops_flags_without_eating_the_next_token() -> None:
    argv = ["worker", "--beat", "--app", "m:app", "--processes", "2"]
    assert child_argv(argv, ("--processes",), flags=("--beat",)) == ["worker", "--app", "m:app"]


def test_child_argv_keeps_options_that_only_start_alike() -> None:
    assert child_argv(["worker", "--processes-x", "1"], ("--processes",)) == ["worker", "--processes-x", "1"]


# -- the supervisor with stand-in children ------------------------------------------------


def _python(code: str) -> Callable[[int], list[str]]:
    return lambda index: [sys.executable, "-c", code, str(index)]


async def test_children_that_exit_0_in_burst_mode_end_the_supervisor_with_0() -> None:
    supervisor = Supervisor(_python("import sys; sys.exit(0)"), 3, burst=True)
    assert await asyncio.wait_for(supervisor.run(), 30) == 0
    assert [c.restarts for c in supervisor.children] == [0, 0, 0]


async def test_a_child_exiting_with_the_usage_code_stops_every_child_and_exits_2() -> None:
    code = "import sys, time\nif sys.argv[1] == '0': sys.exit(2)\ntime.sleep(60)"
    supervisor = Supervisor(_python(code), 2)
    assert await asyncio.wait_for(supervisor.run(), 30) == 2
    assert supervisor.children[1].exit_code == -signal.SIGTERM  # stopped, not left running


async def test_a_crashed_child_is_restarted_with_backoff_until_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "RESTART_BACKOFF_S", 0.05)
    marks = tmp_path / "starts"
    code = f"import sys\nopen({str(marks)!r}, 'a').write('x')\nsys.exit(1)"
    supervisor = Supervisor(_python(code), 1)
    run = asyncio.ensure_future(supervisor.run())
    await eventually(lambda: marks.exists() and len(marks.read_text()) >= 3, message="three starts")
    supervisor._on_signal(signal.SIGTERM)
    # Stopped during a backoff (or while the child was starting): a clean stop, the crashes
    # were handled (logged and restarted)
    assert await asyncio.wait_for(run, 30) in (0, 1)  # 1 when its last crash raced the stop
    assert supervisor.children[0].restarts >= 2


async def test_each_signal_is_forwarded_once_and_a_second_one_again(tmp_path: Path) -> None:
    # Children that count the SIGTERMs they get and exit on the second one.
    code = (
        "import signal, sys, time, os\n"
        f"path = os.path.join({str(tmp_path)!r}, sys.argv[1])\n"
        "seen = []\n"
        "def on(sig, frame):\n"
        "    seen.append(sig); open(path, 'w').write(str(len(seen)))\n"
        "    if len(seen) == 2: sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on)\n"
        "open(path + '.up', 'w').write('up')\n"
        "while True: time.sleep(0.05)\n"
    )
    supervisor = Supervisor(_python(code), 2)
    supervisor.install_signal_handlers()
    run = asyncio.ensure_future(supervisor.run())
    await eventually(lambda: all((tmp_path / f"{i}.up").exists() for i in range(2)), message="children up")
    os.kill(os.getpid(), signal.SIGTERM)
    await eventually(lambda: all((tmp_path / str(i)).exists() for i in range(2)), message="first SIGTERM forwarded")
    assert supervisor.stop_mode == "warm"
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, 30) in (0, 1)  # 1 when its last crash raced the stop
    assert supervisor.stop_mode == "hard"
    assert [(tmp_path / str(i)).read_text() for i in range(2)] == ["2", "2"]


def test_processes_must_be_a_positive_integer() -> None:
    with pytest.raises(ValueError, match="processes must be an integer >= 1"):
        Supervisor(_python("pass"), 0)


# -- a real ``stem worker --processes 2`` -------------------------------------------------


async def _child_heartbeats(app: Stem, exclude: set[int], count: int) -> dict[int, str]:
    """pid -> worker id of ``count`` live workers whose pid is not in ``exclude``."""
    async def found() -> dict[int, str] | None:
        beats = {hb.pid: hb.worker_id for hb in await app.backend.list_heartbeats() if hb.pid not in exclude}
        return beats if len(beats) >= count else None

    return await eventually(found, message=f"{count} worker heartbeats")


@E2E_SPECS
@pytest.mark.slow
async def test_two_processes_drain_a_queue_in_burst_mode_and_exit_0(producer: Stem, spawn: Spawn, log_dir: Path) -> None:
    ids = await producer.enqueue_many([("t.noop", {"i": i, "sleep": 0.01}) for i in range(200)])
    supervisor = spawn("--processes", "2", "-c", "2", "--burst")
    assert await supervisor.wait() == 0, supervisor.stderr()
    assert await all_in_state(producer, ids, TaskState.SUCCEEDED)
    runs = summarize(read_log(str(log_dir)))
    pids = {pid for pids in runs["finishes"].values() for pid in pids}
    assert len(pids) == 2 and supervisor.pid not in pids  # both children worked, the supervisor ran nothing
    assert sorted(runs["finishes"]) == sorted(ids)


@E2E_SPECS
@pytest.mark.slow
async def test_a_killed_child_is_replaced_and_sigterm_stops_every_child_warm(
        producer: Stem, spawn: Spawn, log_dir: Path) -> None:
    supervisor = spawn("--processes", "2", "-c", "2", "--worker-id", "box")
    children = await _child_heartbeats(producer, {supervisor.pid}, 2)
    assert sorted(children.values()) == ["box-1", "box-2"]  # one heartbeat per child, each its own id
    victim = next(iter(children))
    os.kill(victim, signal.SIGKILL)
    replaced = await _child_heartbeats(producer, {supervisor.pid, *children}, 1)
    ids = await producer.enqueue_many([("t.noop", {"i": i}) for i in range(50)])
    await eventually(lambda: all_in_state(producer, ids, TaskState.SUCCEEDED), message="tasks done after the restart")
    assert "restarting in" in supervisor.log()
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait() == 0, supervisor.stderr()
    survivors = [pid for pid in (*children, *replaced) if pid != victim]
    assert not any(_alive(pid) for pid in survivors)


@pytest.mark.parametrize("process_spec", [SQLITE_SPEC], ids=lambda s: s.id, indirect=True)
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
async def test_children_stop_when_their_supervisor_is_sigkilled(producer: Stem, spawn: Spawn) -> None:
    supervisor = spawn("--processes", "2", "-c", "1")
    children = await _child_heartbeats(producer, {supervisor.pid}, 2)
    supervisor.kill()
    await eventually(lambda: not any(_alive(pid) for pid in children), message="orphaned children to stop")


def test_a_bad_app_fails_before_any_child_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", "no_such_module_x:app", "--processes", "2",
         "--broker", f"sqlite://{tmp_path / 's.db'}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "cannot import app module 'no_such_module_x'" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise AssertionError("no two adjacent free ports")


@pytest.mark.parametrize("process_spec", [SQLITE_SPEC], ids=lambda s: s.id, indirect=True)
@pytest.mark.slow
async def test_each_child_serves_its_metrics_on_the_port_plus_its_index(producer: Stem, spawn: Spawn) -> None:
    port = _free_port_pair()
    supervisor = spawn("--processes", "2", "-c", "1", "--metrics-port", str(port), "--metrics-addr", "127.0.0.1")
    children = await _child_heartbeats(producer, {supervisor.pid}, 2)

    def scrape(p: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=10) as response:
            return response.read().decode()

    pages = [await asyncio.to_thread(scrape, p) for p in (port, port + 1)]
    ids = {line.split('worker="')[1].split('"')[0] for page in pages for line in page.splitlines()
           if line.startswith("stem_worker_info")}
    assert ids == set(children.values())  # two servers, one per child
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait() == 0, supervisor.stderr()


@pytest.mark.parametrize("process_spec", [SQLITE_SPEC, REDIS_SPEC, POSTGRES_SPEC, RABBITMQ_SPEC, SQS_SPEC], ids=lambda s: s.id,
                         indirect=True)
@pytest.mark.slow
async def test_a_task_that_kills_its_worker_is_dead_lettered_after_the_delivery_limit(
        producer: Stem, spawn: Spawn, log_dir: Path, process_spec: AdapterSpec) -> None:
    # Given a supervisor (it restarts a dead child) and a task that kills its worker process
    supervisor = spawn("--processes", "2", "-c", "1", "--max-deliveries", "2")
    await _child_heartbeats(producer, {supervisor.pid}, 2)
    task_id = await producer.enqueue("t.crash")

    # When it has killed two workers, the third delivery is dead-lettered without running
    async def dead() -> bool:
        return await producer.broker.get_dead_letter("default", task_id) is not None

    await eventually(dead, timeout=90, message="the crashing task dead-lettered")
    entry = await producer.broker.get_dead_letter("default", task_id)
    assert entry is not None and entry.reason == "delivery-limit-exceeded"
    status = await producer.backend.get_status(task_id)
    assert status is not None and status.state is TaskState.FAILED
    delivered = int(re.search(r"delivered (\d+) times without being settled", status.error["message"]).group(1))
    starts = [t for event, t, _ in read_log(str(log_dir)) if event == "start" and t == task_id]
    if process_spec.id == "rabbitmq":
        # AMQP flags a redelivery without counting it: the adapter re-publishes it counted
        # and acks the original, and a worker that dies before that ack reached the server
        # leaves the original to come back too, so one run more than the limit can happen.
        assert delivered >= 3 and 2 <= len(starts) <= 3
    else:
        assert delivered == 3 and len(starts) == 2
    assert "restarting in" in supervisor.log()
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait() == 0, supervisor.stderr()
