"""The ``ci`` profile of the chaos scenarios, one test per scenario and broker.

Each run prints its summary JSON (``pytest -s`` shows it; it is also in the run's
``summary.json``) and fails with the checker's violations.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import broker_faults
from tests.chaos.runner import run_scenario
from tests.specs import SPECS, AdapterSpec, require_service

CROSS_PROCESS = [s for s in SPECS if s.cross_process]
# STEM_CHAOS_SCENARIOS=1,2: run only these scenarios (the CI time budget); default all.
SELECTED = {int(n) for n in os.environ.get("STEM_CHAOS_SCENARIOS", "1,2,3,4,5,6,7").split(",") if n.strip()}


def _require(spec: AdapterSpec) -> None:
    require_service(spec.service)
    if spec.paired_backend is not None:
        require_service(spec.paired_backend.service)


async def _run(spec: AdapterSpec, scenario: int, tmp_path: Path) -> dict[str, Any]:
    if scenario not in SELECTED:
        pytest.skip(f"scenario {scenario} is not in STEM_CHAOS_SCENARIOS")
    _require(spec)
    summary = await run_scenario("ci", spec.id, scenario, tmp_path / "history")
    print(json.dumps(summary))
    assert summary["valid"], json.dumps({k: summary.get(k) for k in ("violations", "explanations", "samples")}, indent=1)
    return summary


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", CROSS_PROCESS, ids=lambda s: s.id)
async def test_1_killed_workers_lose_nothing_and_every_duplicate_is_explained(spec: AdapterSpec, tmp_path: Path) -> None:
    summary = await _run(spec, 1, tmp_path)
    assert summary["lost"] == summary["unexpected"] == summary["unexplained_duplicates"] == 0
    assert summary["completed"] == summary["confirmed"] == summary["attempted"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", CROSS_PROCESS, ids=lambda s: s.id)
async def test_2_a_worker_frozen_past_its_lease_changes_nothing_when_it_wakes(spec: AdapterSpec, tmp_path: Path) -> None:
    summary = await _run(spec, 2, tmp_path)
    assert summary["duplicate_causes"] == {"pause": summary["duplicated"]}
    assert summary["late_acks"] == summary["confirmed"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.id in ("redis", "postgres")], ids=lambda s: s.id)
async def test_4_stalled_dropped_and_partitioned_connections_move_leases_and_lose_nothing(spec: AdapterSpec, tmp_path: Path) -> None:
    summary = await _run(spec, 4, tmp_path)
    assert summary["leases_moved_from_stalled"] > 0
    assert set(summary["duplicate_causes"]) <= {"cut"}


# (SQS buried an undecodable message twice when its delete came after the lease: the dead
# letter's id now comes from the SQS message id, so the dead queue keeps one entry.)
POISON_SPECS = CROSS_PROCESS


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("spec", POISON_SPECS, ids=lambda s: s.id)
async def test_5_poison_envelopes_are_dead_lettered_with_a_reason_and_good_ones_complete(spec: AdapterSpec, tmp_path: Path) -> None:
    summary = await _run(spec, 5, tmp_path)
    assert summary["dead"] == summary["bad"] and summary["completed"] == summary["good"]
    assert "" not in summary["dead_reasons"]


@pytest.mark.slow
@pytest.mark.timeout(300)
# Not SQS: moto drains delayed messages at ~10 a second (750 due at once took 97 s); run it
# with ``python -m tests.chaos run --broker sqs --scenario 6``.
@pytest.mark.parametrize("spec", [s for s in CROSS_PROCESS if s.id != "sqs"], ids=lambda s: s.id)
async def test_6_nothing_starts_before_its_not_before_and_tasks_due_at_once_keep_memory_bounded(
    spec: AdapterSpec, tmp_path: Path
) -> None:
    summary = await _run(spec, 6, tmp_path)
    assert summary["early_starts"] == 0 and summary["completed"] == summary["confirmed"]


# Restarts the machine's PostgreSQL and RabbitMQ (Redis: a private server), as the
# integration restart tests do: the suite runs one test at a time, so nothing else is cut.
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.id in ("sqlite", "redis", "postgres", "rabbitmq")], ids=lambda s: s.id)
async def test_3_a_broker_restart_loses_nothing_confirmed(spec: AdapterSpec, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("restarts shared servers, which would break tests running beside it: run without -n")
    monkeypatch.setenv(broker_faults.ENABLE_ENV, "1")
    summary = await _run(spec, 3, tmp_path)
    assert summary["lost"] == 0


# Two minutes per broker would be ten in a row: the soaks run side by side (each its own
# namespace, SQLite file and processes; RabbitMQ's results and Redis's share one Redis).
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_7_a_soak_with_a_kill_every_10_s_stays_steady_and_flat_on_every_broker(tmp_path: Path) -> None:
    if 7 not in SELECTED:
        pytest.skip("scenario 7 is not in STEM_CHAOS_SCENARIOS")
    for spec in CROSS_PROCESS:
        _require(spec)
    summaries = await asyncio.gather(*(run_scenario("ci", spec.id, 7, tmp_path / spec.id) for spec in CROSS_PROCESS))
    for summary in summaries:
        print(json.dumps(summary))
    failed = {s["broker"]: s["violations"] for s in summaries if not s["valid"]}
    assert not failed, json.dumps(failed, indent=1)
    for summary in summaries:
        assert summary["lost"] == summary["unexpected"] == summary["unexplained_duplicates"] == 0
