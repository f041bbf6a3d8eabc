"""The cost of ``Ops.overview`` (and of a one-shot ``stem inspect queues``) with 10 and with
1,000,000 pending messages: it reads counters, heartbeats and two small records, so it
must not grow with queue length (SPEC §11).

One JSON line per figure::

    {"system": "stem-sqlite", "mode": "ops-overview", "pending": 1000000, "calls": 100, "median_ms": ..., ...}
    {"system": "stem-sqlite", "mode": "stem inspect queues", "pending": 1000000, "runs": 5, "median_ms": ...}

Each size gets its own random namespace, filled through the public ``publish_many``
(batches of ``FILL_BATCH``) and removed at the end; the two are measured alternately.

Usage: ``python bench/ops_overview.py [--brokers sqlite,redis] [--big 1000000] [--calls 20] [--cli-runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.ops import Ops
from workload import drop_namespace  # bench/workload.py: one way to drop a run's keys

REDIS_URL = "redis://127.0.0.1:6379/10"
QUEUE = "ops-bench"
FILL_BATCH = 5000
STEM = str(Path(sys.executable).parent / "stem")


def emit(system: str, **fields: object) -> None:
    print(json.dumps({"system": system, **fields}), flush=True)


async def fill(url: str, namespace: str, upto: int) -> None:
    broker = await connect_broker(url, namespace=namespace)
    try:
        have = (await broker.queue_stats([QUEUE]))[0].pending
        while have < upto:
            n = min(FILL_BATCH, upto - have)
            await broker.publish_many([Envelope(name="bench.noop", args={"i": have + i}, queue=QUEUE) for i in range(n)])
            have += n
    finally:
        await broker.close()


async def overview_cost(url: str, namespace: str, calls: int) -> tuple[float, float, int]:
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    try:
        ops = Ops(broker, backend, actor="bench")
        pending = (await ops.overview()).queues[0].pending  # warm-up (connections, statements)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            await ops.overview()
            times.append(time.perf_counter() - start)
    finally:
        await broker.close()
        await backend.close()
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], pending


def cli_cost(url: str, namespace: str, runs: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
    env.update({"STEM_BROKER_URL": url, "STEM_NAMESPACE": namespace})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([STEM, "inspect", "queues", "--json", "--sample", "0"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_broker(kind: str, big: int, calls: int, cli_runs: int) -> None:
    """Two namespaces (10 and ``big`` pending), measured alternately so that load from
    other work on the machine hits both sizes alike."""
    folder = Path(tempfile.mkdtemp(prefix="stem-ops-bench-"))
    system = f"stem-{kind}"
    sizes = {}
    for pending in (10, big):
        namespace = "bench" + uuid.uuid4().hex[:8]
        url = f"sqlite://{folder / (namespace + '.db')}" if kind == "sqlite" else REDIS_URL
        sizes[pending] = (url, namespace)
    api: dict[int, list[float]] = {n: [] for n in sizes}
    cli: dict[int, list[float]] = {n: [] for n in sizes}
    try:
        filled = {}
        for pending, (url, namespace) in sizes.items():
            started = time.perf_counter()
            asyncio.run(fill(url, namespace, pending))
            filled[pending] = time.perf_counter() - started
        for _ in range(cli_runs):
            for pending, (url, namespace) in sizes.items():
                median, _p95, seen = asyncio.run(overview_cost(url, namespace, calls))
                assert seen == pending, (seen, pending)
                api[pending].append(median)
                cli[pending].append(cli_cost(url, namespace, 1))
        for pending in sizes:
            emit(system, mode="ops-overview", pending=pending, calls=calls * cli_runs,
                 median_ms=round(statistics.median(api[pending]) * 1000, 3),
                 max_of_medians_ms=round(max(api[pending]) * 1000, 3), fill_seconds=round(filled[pending], 1))
            emit(system, mode="stem inspect queues", pending=pending, runs=cli_runs,
                 median_ms=round(statistics.median(cli[pending]) * 1000, 1))
    finally:
        if kind == "redis":
            for url, namespace in sizes.values():
                asyncio.run(drop_namespace(url, namespace))
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--cli-runs", type=int, default=5)
    args = parser.parse_args()
    for kind in args.brokers.split(","):
        run_broker(kind.strip(), args.big, args.calls, args.cli_runs)


if __name__ == "__main__":
    main()
