"""Metrics and logs end to end (docs/metrics.md): a real ``stem worker --metrics-port``
scraped over HTTP and parsed with prometheus_client's parser, the ``stem metrics``
exporter scraped, and the worker's ``--log-format json`` lines parsed one by one, on
every cross-process broker."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from stem_core import Stem, TaskState
from tests.support import eventually, free_port
from tests.worker.apps.tasks import ODD_MESSAGE, ODD_TASK
from tests.worker.helpers import ROOT, WorkerProcess, all_in_state

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Spawn = Callable[..., WorkerProcess]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
HTTP_TIMEOUT_S = 10.0



def scrape(port: int) -> Samples | None:
    """Every sample of ``/metrics`` on ``port`` by (name, labels), or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HTTP_TIMEOUT_S) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def exporter(process_url: str, process_backend_url: str, namespace: str,
             log_dir: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """``exporter(port)``: a ``stem metrics`` process on the test's broker (killed at teardown)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "stem_tui.cli.main", "metrics", "--broker", process_url, "--backend",
                   process_backend_url, "--namespace", namespace, "--port", str(port), "--addr", "127.0.0.1",
                   "--cache", "0s"]
        with open(log_dir / "exporter.stderr", "wb") as stderr:
            started.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_worker_and_exporter_metrics_and_json_logs(
    producer: Stem, spawn: Spawn, log_dir: Path, exporter: Callable[[int], subprocess.Popen[bytes]],
) -> None:
    # Given a worker serving metrics and logging JSON lines at INFO
    port = free_port()
    worker = spawn("-c", "2", "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--log-format", "json",
                   "--loglevel", "info")
    # and the queue exporter on the same broker (both start while the tasks are enqueued)
    eport = free_port()
    proc = exporter(eport)
    # When it runs two good tasks, one that fails three times (max_retries=2), one nobody
    # knows, and one with a hostile name that logs a hostile message
    good = [await producer.enqueue("t.noop", {"i": i}) for i in range(2)]
    poison = await producer.enqueue("t.poison")
    unknown = await producer.enqueue("t.does-not-exist")
    odd = await producer.enqueue(ODD_TASK, {"message": ODD_MESSAGE})
    await eventually(lambda: all_in_state(producer, [*good, odd], TaskState.SUCCEEDED), message="good tasks done")
    await eventually(lambda: all_in_state(producer, [poison, unknown], TaskState.FAILED), message="bad tasks failed")

    # Then its /metrics, parsed by prometheus_client, counts each outcome by task and queue
    def settled() -> Samples | None:
        samples = scrape(port)
        return samples if samples and value(samples, "stem_tasks_dead_lettered_total", queue="default",
                                                  task="t.poison", reason="max-retries-exhausted") == 1 else None

    samples = await eventually(settled, message="the poison task's dead letter in /metrics")
    noop, poisoned = {"queue": "default", "task": "t.noop"}, {"queue": "default", "task": "t.poison"}
    assert value(samples, "stem_tasks_started_total", **noop) == 2
    assert value(samples, "stem_tasks_succeeded_total", **noop) == 2
    assert value(samples, "stem_tasks_started_total", **poisoned) == 3
    assert value(samples, "stem_tasks_retried_total", **poisoned) == 2
    assert value(samples, "stem_tasks_failed_total", **poisoned) == 1
    assert value(samples, "stem_task_duration_seconds_count", **poisoned) == 3
    # an unregistered name from the broker is never a label value of its own
    assert value(samples, "stem_tasks_dead_lettered_total", queue="default", task="other", reason="unregistered-task") == 1
    assert value(samples, "stem_tasks_failed_total", queue="default", task="other") == 1
    assert not any("t.does-not-exist" in v for _, labels in samples for _, v in labels)
    # a registered hostile name is a label, made visible (no escape byte reaches a terminal)
    odd_labels = [dict(labels)["task"] for name, labels in samples
                  if name == "stem_tasks_succeeded_total" and dict(labels)["task"].startswith("t.odd")]
    assert odd_labels == ['t.odd "quoted"\\x0aname\\x1b[31m\\u202e\\']
    assert value(samples, "stem_worker_up") == 1 and value(samples, "stem_worker_concurrency") == 2
    assert value(samples, "stem_worker_tasks_active") == 0
    assert value(samples, "stem_lease_renewal_failures_total") == 0

    # And the exporter serves the queue figures of the same broker
    try:
        def queue_figures() -> Samples | None:
            found = scrape(eport)
            return found if found and value(found, "stem_queue_depth", queue="default", state="dead") == 2 else None

        figures = await eventually(queue_figures, message="the exporter's dead count")
        assert value(figures, "stem_exporter_scrape_success") == 1
        assert value(figures, "stem_queue_depth", queue="default", state="pending") == 0
        assert value(figures, "stem_workers_live") == 1 and value(figures, "stem_queue_workers", queue="default") == 1
        assert value(figures, "stem_queue_paused", queue="default") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HTTP_TIMEOUT_S * 3) == 0, (log_dir / "exporter.stderr").read_text()

    # And once stopped, every line it logged is one JSON object
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0
    raw = worker.log()
    assert "\x1b" not in raw and "\u202e" not in raw and "\u2028" not in raw
    records = [json.loads(line) for line in raw.splitlines()]
    assert all({"ts", "level", "logger", "message", "worker_id"} <= r.keys() for r in records)
    assert {r["worker_id"] for r in records} == {_worker_id(samples)}
    outcomes = [(r["task_id"], r["outcome"], r["attempt"]) for r in records if r["logger"] == "stem.task"]
    assert [o for o in outcomes if o[0] == poison] == [
        (poison, "retried", 0), (poison, "retried", 1), (poison, "failed", 2), (poison, "dead-lettered", 2)]
    assert [o[1] for o in outcomes if o[0] == unknown] == ["failed", "dead-lettered"]
    # the hostile name and message come back exactly, as fields of their task
    odd_lines = [r for r in records if r.get("task_id") == odd]
    assert {r["task_name"] for r in odd_lines} == {ODD_TASK} and {r["queue"] for r in odd_lines} == {"default"}
    own = [r for r in odd_lines if r["logger"] == "tests.app"]
    assert [(r["message"], r["level"], r["attempt"]) for r in own] == [(ODD_MESSAGE, "WARNING", 0)]
    assert [r["outcome"] for r in odd_lines if r["logger"] == "stem.task"] == ["succeeded"]  # started: DEBUG


def _worker_id(samples: Samples) -> str:
    return next(dict(labels)["worker"] for name, labels in samples if name == "stem_worker_info")



@pytest.mark.parametrize("command", ["worker", "metrics", "bad-format"])
def test_a_port_in_use_or_a_bad_log_format_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        base = [sys.executable, "-m", "stem_tui.cli.main"]
        common = ["--broker", f"sqlite:///{tmp_path}/stem.db", "--namespace", "tports"]
        args = {
            "worker": [*base, "worker", "--app", "tests.worker.apps.tasks:app", "--metrics-port", port,
                       "--metrics-addr", "127.0.0.1", *common],
            "metrics": [*base, "metrics", "--port", port, "--addr", "127.0.0.1", *common],
            "bad-format": [*base, "worker", "--app", "tests.worker.apps.tasks:app", "--log-format", "xml", *common],
        }[command]
        result = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    needle = "--log-format must be one of text, json" if command == "bad-format" else f"cannot serve metrics on 127.0.0.1:{port}"
    assert err.startswith("error: ") and needle in err, err
