"""The pieces behind docs/metrics.md that need no server: the exporter's cache and
timeout (a read that hangs does not hang the scrape), the task label cap, and the JSON
log line's escaping."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import pytest

from stem_core.logs import JsonFormatter, bind
from stem_core.ops.metrics import QueueCollector
from tests.cli.helpers import open_memory
from tests.support import eventually

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from stem_core.worker.metrics import OTHER_TASK, WorkerMetrics  # noqa: E402


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_a_hanging_read_answers_with_the_last_figures_and_success_0(namespace: str) -> None:
    ops, broker, backend, _ = await open_memory(namespace, stale_after=5.0)
    try:
        from stem_core import Envelope

        await broker.publish(Envelope(name="t.x", queue="emails"))
        collector = QueueCollector(ops, asyncio.get_running_loop(), cache=0.0, timeout=1.0)  # generous: a loaded CI box must not time out the good reads
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        # Given one good read
        first = await asyncio.to_thread(samples, registry)
        assert first[("stem_queue_depth", (("queue", "emails"), ("state", "pending")))] == 1
        assert first[("stem_exporter_scrape_success", ())] == 1
        assert first[("stem_queue_oldest_age_seconds", (("queue", "emails"),))] >= 0
        # When the broker stops answering
        release = asyncio.Event()
        real = ops.overview

        async def hanging(*args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await real(*args, **kwargs)

        ops.overview = hanging  # type: ignore[method-assign]
        # Then a scrape still answers: the last figures, success 0
        stale = await asyncio.to_thread(samples, registry)
        assert stale[("stem_exporter_scrape_success", ())] == 0
        assert stale[("stem_queue_depth", (("queue", "emails"), ("state", "pending")))] == 1
        # And once it answers again, so do the figures
        release.set()
        ops.overview = real  # type: ignore[method-assign]
        # (a scrape may still join the read that hung, which times out on the loop too:
        # the one after it reads afresh)
        async def answers_again() -> bool:
            again = await asyncio.to_thread(samples, registry)
            return again[("stem_exporter_scrape_success", ())] == 1

        await eventually(answers_again, message="a scrape to succeed once the broker answers")
    finally:
        await broker.close()
        await backend.close()


def test_task_labels_are_capped_and_unregistered_names_are_other() -> None:
    metrics = WorkerMetrics(worker_id="w", registered=lambda name: not name.startswith("evil"), max_tasks=2)
    for name in ("a", "b", "c", "evil-1", "evil-2", "a"):
        metrics.task_started("q", name)
    found = samples(metrics.registry)
    started = {dict(labels)["task"]: v for (name, labels), v in found.items() if name == "stem_tasks_started_total"}
    assert started == {"a": 2, "b": 1, OTHER_TASK: 3}


def test_json_lines_escape_everything_and_carry_bound_fields() -> None:
    formatter = JsonFormatter()
    text = 'a "q"\n\r\x1b[2J\u202e\u2028\ud800 \\ end'
    with bind(task_id="id-1", task_name=text, queue="q", attempt=2, worker_id="w"):
        record = logging.LogRecord("stem.task", logging.INFO, __file__, 1, "msg %s", (text,), None)
        line = formatter.format(record)
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        failing = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    error_line = formatter.format(failing)
    for raw in (line, error_line):
        assert "\n" not in raw and "\r" not in raw
        assert all(ch.isprintable() for ch in raw), raw
    data = json.loads(line)
    assert data["message"] == "msg " + text and data["task_name"] == text
    assert (data["task_id"], data["queue"], data["attempt"], data["worker_id"], data["level"]) == ("id-1", "q", 2, "w", "INFO")
    assert "ValueError: bad" in json.loads(error_line)["exc_info"] and "task_id" not in json.loads(error_line)
