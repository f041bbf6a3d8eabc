"""The SQLite broker adapter measured: rates, cross-process latency, idle CPU, and the cost
of ``queue_stats`` at 10 and at 1,000,000 pending messages.

Figures (one JSON line each, median of ``--runs`` where it is a rate):

* ``enqueue``: ``publish`` one envelope at a time, each awaited;
* ``bulk``: ``publish_many`` in batches of 100;
* ``drain prefetch P``: one subscription consuming and acking every message;
* ``enqueue+status`` / ``bulk+status``: ``Broker.enqueue`` with a result backend on the
  same file (queued status and message in one transaction), one at a time / by 100;
* ``drain+status prefetch 10``: consuming with ``ack_with_status`` (final status and ack
  in one transaction), the broker's share of a worker's per-task cost;
* ``latency``: a consumer in another process, 500 messages published here 20 ms apart,
  publish -> delivery p50/p99 (both sides read the same machine clock);
* ``idle cpu``: CPU seconds used by an idle consumer process over ``--idle`` seconds;
* ``queue_stats``: median time of one call with 10 and with 1,000,000 pending rows.

Usage: ``python bench/sqlite_broker.py [--n 20000] [--runs 3] [--idle 10] [--big 1000000] [--rates-only]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from stem_core import Envelope, TaskState, connect_backend, connect_broker

BATCH_SIZE = 100
LATENCY_MESSAGES = 500
LATENCY_GAP_S = 0.02
STATS_CALLS = 30

# The far side of the latency and idle-CPU figures: consumes QUEUE and acks; prints
# "ready" once its first (empty) claim ran, then one latency (ms) per delivery.
CONSUMER = """
import asyncio, sys, time
from stem_core import connect_broker
async def main(url, queue):
    broker = await connect_broker(url, namespace="bench")
    deliveries = broker.consume([queue], prefetch=1)
    print("ready", flush=True)
    async for delivery in deliveries:
        print(round((time.time() - delivery.envelope.enqueued_at.timestamp()) * 1000, 3), flush=True)
        await broker.ack(delivery)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def emit(**fields: object) -> None:
    print(json.dumps({"system": "stem-sqlite", **fields}), flush=True)


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope(name="bench.noop", args={"i": i}) for i in range(n)]


async def enqueue(url: str, n: int) -> float:
    broker = await connect_broker(url, namespace="bench")
    envelopes = _envelopes(n)
    start = time.perf_counter()
    for envelope in envelopes:
        await broker.publish(envelope)
    elapsed = time.perf_counter() - start
    await broker.close()
    return elapsed


async def bulk(url: str, n: int) -> float:
    broker = await connect_broker(url, namespace="bench")
    envelopes = _envelopes(n)
    start = time.perf_counter()
    for i in range(0, n, BATCH_SIZE):
        await broker.publish_many(envelopes[i : i + BATCH_SIZE])
    elapsed = time.perf_counter() - start
    await broker.close()
    return elapsed


async def drain(url: str, n: int, prefetch: int) -> float:
    broker = await connect_broker(url, namespace="bench")
    envelopes = _envelopes(n)
    for i in range(0, n, BATCH_SIZE):
        await broker.publish_many(envelopes[i : i + BATCH_SIZE])
    start = time.perf_counter()
    done = 0
    deliveries = broker.consume(["default"], prefetch=prefetch)
    async for delivery in deliveries:
        await broker.ack(delivery)
        done += 1
        if done == n:
            break
    elapsed = time.perf_counter() - start
    await deliveries.aclose()  # type: ignore[attr-defined]
    await broker.close()
    return elapsed


async def enqueue_status(url: str, n: int, batch: int) -> float:
    broker = await connect_broker(url, namespace="bench")
    backend = await connect_backend(url, namespace="bench")
    envelopes = _envelopes(n)
    start = time.perf_counter()
    for i in range(0, n, batch):
        await broker.enqueue(envelopes[i : i + batch], backend)
    elapsed = time.perf_counter() - start
    await broker.close()
    await backend.close()
    return elapsed


async def drain_status(url: str, n: int, prefetch: int) -> float:
    broker = await connect_broker(url, namespace="bench")
    backend = await connect_backend(url, namespace="bench")
    envelopes = _envelopes(n)
    for i in range(0, n, BATCH_SIZE):
        await broker.enqueue(envelopes[i : i + BATCH_SIZE], backend)
    start = time.perf_counter()
    done = 0
    deliveries = broker.consume(["default"], prefetch=prefetch)
    async for delivery in deliveries:
        await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload=None)
        done += 1
        if done == n:
            break
    elapsed = time.perf_counter() - start
    await deliveries.aclose()  # type: ignore[attr-defined]
    await broker.close()
    await backend.close()
    return elapsed


async def _spawn_consumer(url: str, queue: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CONSUMER, url, queue, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).decode().strip() == "ready"
    return proc


async def latency(url: str) -> tuple[float, float]:
    broker = await connect_broker(url, namespace="bench")
    proc = await _spawn_consumer(url, "latency")
    await asyncio.sleep(1.0)  # let the consumer settle into idle polling
    assert proc.stdout is not None
    samples = []
    for _ in range(LATENCY_MESSAGES):
        await broker.publish(Envelope(name="bench.latency", queue="latency"))
        samples.append(float((await proc.stdout.readline()).decode()))
        await asyncio.sleep(LATENCY_GAP_S)
    proc.kill()
    await proc.wait()
    await broker.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(url: str, seconds: float) -> float:
    proc = await _spawn_consumer(url, "idle")
    await asyncio.sleep(1.0)
    before = _cpu_seconds(proc.pid)
    await asyncio.sleep(seconds)
    used = _cpu_seconds(proc.pid) - before
    proc.kill()
    await proc.wait()
    return used


def _fill(path: Path, queue: str, rows: int) -> None:
    """Insert ``rows`` pending jobs straight into the file (triggers keep the counters)."""
    text = Envelope(name="bench.noop", queue=queue).to_json()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO jobs (ns, msg_id, queue, name, priority, envelope) "
        "SELECT 'bench', 'fill-' || i, ?, 'bench.noop', i % 10, ? FROM n",
        (rows, queue, text),
    )
    conn.execute("COMMIT")
    conn.close()


async def stats_cost(url: str, path: Path, rows: int) -> float:
    broker = await connect_broker(url, namespace="bench")
    queue = f"stats-{rows}-{uuid.uuid4().hex[:6]}"
    _fill(path, queue, rows)
    [stats] = await broker.queue_stats([queue])
    assert stats.pending == rows, stats
    times = []
    for _ in range(STATS_CALLS):
        start = time.perf_counter()
        await broker.queue_stats([queue])
        times.append(time.perf_counter() - start)
    await broker.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--rates-only", action="store_true", help="skip latency, idle cpu and queue_stats")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stem-sqlite-bench-"))

    def url() -> str:
        return f"sqlite://{folder / (uuid.uuid4().hex + '.db')}"

    try:
        for mode, run in (("enqueue", enqueue), ("bulk", bulk)):
            seconds = statistics.median(asyncio.run(run(url(), args.n)) for _ in range(args.runs))
            emit(mode=mode, n=args.n, seconds=round(seconds, 4), rate=round(args.n / seconds, 1))
        for prefetch in (1, 10):
            seconds = statistics.median(asyncio.run(drain(url(), args.n, prefetch)) for _ in range(args.runs))
            emit(mode=f"drain prefetch {prefetch}", n=args.n, seconds=round(seconds, 4), rate=round(args.n / seconds, 1))
        for mode, batch in (("enqueue+status", 1), ("bulk+status", BATCH_SIZE)):
            seconds = statistics.median(asyncio.run(enqueue_status(url(), args.n, batch)) for _ in range(args.runs))
            emit(mode=mode, n=args.n, seconds=round(seconds, 4), rate=round(args.n / seconds, 1))
        seconds = statistics.median(asyncio.run(drain_status(url(), args.n, 10)) for _ in range(args.runs))
        emit(mode="drain+status prefetch 10", n=args.n, seconds=round(seconds, 4), rate=round(args.n / seconds, 1))
        if args.rates_only:
            return
        p50, p99 = asyncio.run(latency(url()))
        emit(mode="latency", n=LATENCY_MESSAGES, p50_ms=round(p50, 3), p99_ms=round(p99, 3))
        used = asyncio.run(idle_cpu(url(), args.idle))
        emit(mode="idle cpu", seconds=args.idle, cpu_seconds=round(used, 3), cpu_percent=round(100 * used / args.idle, 2))
        path = folder / "stats.db"
        stats_url = f"sqlite://{path}"
        for rows in (10, args.big):
            cost = asyncio.run(stats_cost(stats_url, path, rows))
            emit(mode="queue_stats", pending=rows, calls=STATS_CALLS, median_ms=round(cost * 1000, 3))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
