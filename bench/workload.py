"""The SPEC §11 workload for any broker: enqueue, bulk, drain and latency.

    python bench/workload.py --broker sqlite:///tmp/b.db --system stem-sqlite [--runs 3] [--n 20000]

One producer process (this script) and one ``stem worker`` process (concurrency 2,
results stored). The task body is a no-op that increments one Redis counter
(``redis://127.0.0.1:6379/15``). Each figure is the median of ``--runs`` runs, printed as
one JSON line: ``{"system", "mode", "n", "seconds", "rate"}`` (latency lines add
``p50_ms``/``p99_ms``); the single runs go to stderr.

* enqueue: ``n`` ``app.enqueue`` calls, each awaited before the next;
* bulk: the same ``n`` through ``app.enqueue_many`` in batches of 100;
* drain: ``n`` tasks queued first, then ``stem worker --burst`` started; timed from
  process start to the last task done (the Redis counter reaching ``n``);
* latency: an idle running worker, 500 tasks enqueued 20 ms apart, enqueue -> start.

``--processes N`` runs the worker as ``stem worker --processes N`` (each child with the same
concurrency); ``--ignore-result`` enqueues with ``ignore_result=True``, the switch that
celery and taskiq have on by default (statuses are stored otherwise).

A ``memory://`` broker cannot cross processes, so for it drain and latency run the worker
in this process (same concurrency) and the JSON line says ``"worker": "in-process"``.
Each run uses a fresh namespace, so runs never see each other's messages, and drops it
afterwards on a server (Redis: every key under it; PostgreSQL: its schema).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stem_core import Stem, Worker  # noqa: E402
from stem_core.worker import TaskContext  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"
BULK_BATCH = 100
LATENCY_TASKS = 500
LATENCY_GAP_S = 0.020
WORKER_CONCURRENCY = 2
POLL_S = 0.005
RUN_TIMEOUT_S = 600.0
APP_PATH = "bench.workload:app"

_redis_client: Any = None


def _redis() -> Any:
    global _redis_client
    if _redis_client is None:
        import redis.asyncio as aioredis

        _redis_client = aioredis.Redis.from_url(REDIS_URL)
    return _redis_client


def register(stem: Stem) -> Stem:
    @stem.task(name="bench.incr")
    async def incr(ctx: TaskContext, k: str) -> None:
        await _redis().incr(k)

    @stem.task(name="bench.latency")
    async def latency(ctx: TaskContext, k: str) -> None:
        # enqueued_at is stamped when the producer builds the envelope, on the same clock.
        waited_ms = (time.time() - ctx.envelope.enqueued_at.timestamp()) * 1000.0
        client = _redis()
        await client.rpush(k + ":lat", waited_ms)
        await client.incr(k)

    return stem


# The app `stem worker --app bench.workload:app` runs; URLs come from its flags.
app = register(Stem())


# -- one run of each mode ---------------------------------------------------------------


async def _producer(args: argparse.Namespace, namespace: str) -> Stem:
    stem = register(Stem(broker=args.broker, backend=args.backend or args.broker, namespace=namespace,
                         ignore_result=args.ignore_result))
    await stem.connect()
    return stem


async def run_enqueue(args: argparse.Namespace, namespace: str, key: str) -> dict[str, Any]:
    stem = await _producer(args, namespace)
    try:
        start = time.perf_counter()
        for _ in range(args.n):
            await stem.enqueue("bench.incr", {"k": key})
        return {"seconds": time.perf_counter() - start}
    finally:
        await stem.close()


async def run_bulk(args: argparse.Namespace, namespace: str, key: str) -> dict[str, Any]:
    stem = await _producer(args, namespace)
    try:
        start = time.perf_counter()
        for offset in range(0, args.n, BULK_BATCH):
            count = min(BULK_BATCH, args.n - offset)
            await stem.enqueue_many([("bench.incr", {"k": key})] * count)
        return {"seconds": time.perf_counter() - start}
    finally:
        await stem.close()


async def _wait_counter(key: str, target: int) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while int(await _redis().get(key) or 0) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {target} tasks on {key}")
        await asyncio.sleep(POLL_S)


def _spawn_worker(args: argparse.Namespace, namespace: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", APP_PATH,
        "--broker", args.broker, "--backend", args.backend or args.broker, "--namespace", namespace,
        "-c", str(WORKER_CONCURRENCY), "--processes", str(args.processes), "--loglevel", "warning", *extra,
    ]
    return subprocess.Popen(command, cwd=ROOT)


def _in_process(args: argparse.Namespace) -> bool:
    return args.broker.startswith("memory://")


async def run_drain(args: argparse.Namespace, namespace: str, key: str) -> dict[str, Any]:
    stem = await _producer(args, namespace)
    try:
        for offset in range(0, args.n, BULK_BATCH):
            await stem.enqueue_many([("bench.incr", {"k": key})] * min(BULK_BATCH, args.n - offset))
        if _in_process(args):
            start = time.perf_counter()
            await Worker(stem, concurrency=WORKER_CONCURRENCY, burst=True).run()
            return {"seconds": time.perf_counter() - start, "worker": "in-process"}
        start = time.perf_counter()
        proc = _spawn_worker(args, namespace, "--burst")
        await _wait_counter(key, args.n)
        seconds = time.perf_counter() - start
        proc.wait(RUN_TIMEOUT_S)
        return {"seconds": seconds}
    finally:
        await stem.close()


async def run_latency(args: argparse.Namespace, namespace: str, key: str) -> dict[str, Any]:
    stem = await _producer(args, namespace)
    extra: dict[str, Any] = {}
    worker_task = None
    proc = None
    try:
        if _in_process(args):
            worker = Worker(stem, concurrency=WORKER_CONCURRENCY)
            worker_task = asyncio.create_task(worker.run())
            await worker.ready.wait()
            extra["worker"] = "in-process"
        else:
            proc = _spawn_worker(args, namespace)
            while not await stem.backend.list_heartbeats():
                await asyncio.sleep(POLL_S)
        await asyncio.sleep(0.5)  # let the worker settle into its idle wait
        start = time.perf_counter()
        for i in range(LATENCY_TASKS):
            await stem.enqueue("bench.latency", {"k": key})
            # Fixed cadence: sleep to the next 20 ms slot, not 20 ms after the enqueue.
            await asyncio.sleep(max(0.0, start + (i + 1) * LATENCY_GAP_S - time.perf_counter()))
        await _wait_counter(key, LATENCY_TASKS)
        waits = sorted(float(v) for v in await _redis().lrange(key + ":lat", 0, -1))
        extra["p50_ms"] = _percentile(waits, 50)
        extra["p99_ms"] = _percentile(waits, 99)
        return {"seconds": time.perf_counter() - start, "n": LATENCY_TASKS, **extra}
    finally:
        if worker_task is not None:
            worker.request_stop("warm")
            await worker_task
        if proc is not None:
            proc.terminate()
            proc.wait(RUN_TIMEOUT_S)
        await stem.close()


async def drop_namespace(url: str, namespace: str) -> None:
    """Remove what a run left under ``namespace`` on the server behind ``url``."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.unlink(*keys[start:start + 1000])
        finally:
            await client.aclose()
    elif scheme in ("postgres", "postgresql"):
        import psycopg

        from stem_core.adapters.postgres.connection import quote_ident, schema_name

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema_name(namespace))} CASCADE")
    elif scheme in ("amqp", "amqps"):
        from tests.specs.rabbitmq import delete_namespace

        await delete_namespace(url, namespace)


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least pct % of the values at or below it.
    index = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100.0 * len(sorted_values)) - 1))
    return sorted_values[index]


MODES = {"enqueue": run_enqueue, "bulk": run_bulk, "drain": run_drain, "latency": run_latency}


async def measure(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    runs = []
    for run in range(args.runs):
        namespace = f"bench{uuid.uuid4().hex[:10]}"
        key = f"stem-bench:{namespace}"
        try:
            result = await MODES[mode](args, namespace, key)
        finally:
            await _redis().delete(key, key + ":lat")
            for url in dict.fromkeys((args.broker, args.backend or args.broker)):
                await drop_namespace(url, namespace)
        n = result.pop("n", args.n)
        result.update(n=n, rate=n / result["seconds"])
        print(json.dumps({"system": args.system, "mode": mode, "run": run + 1, **result}), file=sys.stderr, flush=True)
        runs.append(result)
    runs.sort(key=lambda r: r["seconds"])
    median = dict(runs[len(runs) // 2])
    line = {"system": args.system, "mode": mode, "n": median.pop("n"), "seconds": round(median.pop("seconds"), 4)}
    line["rate"] = round(median.pop("rate"), 1)
    if mode == "latency":
        line["p50_ms"] = round(statistics.median(r["p50_ms"] for r in runs), 3)
        line["p99_ms"] = round(statistics.median(r["p99_ms"] for r in runs), 3)
        median.pop("p50_ms", None)
        median.pop("p99_ms", None)
    line.update(median)
    line["runs"] = args.runs
    return line


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="broker URL, e.g. sqlite:///tmp/bench.db")
    parser.add_argument("--backend", help="result backend URL (default: the broker URL)")
    parser.add_argument("--system", required=True, help='label of the JSON lines, e.g. "stem-sqlite"')
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=20_000, help="tasks per enqueue/bulk/drain run")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--processes", type=int, default=1, help="worker processes (stem worker --processes)")
    parser.add_argument("--ignore-result", action="store_true",
                        help="enqueue with ignore_result=True (no statuses on the success path), as celery/taskiq default")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}")
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    try:
        for mode in modes:
            print(json.dumps(await measure(args, mode)), flush=True)
    finally:
        if _redis_client is not None:
            await _redis_client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
