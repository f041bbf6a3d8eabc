"""Broker-level figures for the Redis adapter, beside the raw redis-py floors measured in
the same run (``bench/redis_floor.py``), so the SPEC §11 ratios can be read directly.

* ``enqueue``: ``broker.publish`` N times, each awaited before the next;
* ``bulk``: ``broker.publish_many`` in batches of 100;
* ``drain``: N queued first, then one consumer (prefetch 100) acks each delivery;
* ``latency``: an idle consumer, 500 messages published 20 ms apart, publish -> delivery;
* ``stats``: one ``queue_stats`` call with 10 and with ``--big`` pending messages
  (the cost must not grow with the queue).

Prints JSON lines (``"system": "stem-redis-broker"`` and ``"redis-floor"``), each the
median of ``--runs``; floor and Stem runs alternate, and Stem's line carries ``x_floor``. Usage:
``python bench/redis_broker.py [--url redis://127.0.0.1:6379/13] [--n 20000] [--runs 3] [--big 200000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis_floor  # noqa: E402

from stem_core import Envelope, connect_broker  # noqa: E402
from tests.specs.redis import delete_namespace  # noqa: E402

BATCH = 100
DRAIN_PREFETCH = 100
LATENCY_N = 500
LATENCY_GAP_S = 0.02
STATS_CALLS = 200


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope(name="bench.noop", args={"i": i}) for i in range(n)]


async def enqueue(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        envs = _envelopes(n)
        start = time.perf_counter()
        for env in envs:
            await broker.publish(env)
        return {"seconds": time.perf_counter() - start}


async def bulk(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        envs = _envelopes(n)
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            await broker.publish_many(envs[i:i + BATCH])
        return {"seconds": time.perf_counter() - start}


async def drain(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        envs = _envelopes(n)
        for i in range(0, n, BATCH):
            await broker.publish_many(envs[i:i + BATCH])
        done = 0
        start = time.perf_counter()
        async for delivery in broker.consume(["default"], prefetch=DRAIN_PREFETCH):
            await broker.ack(delivery)
            done += 1
            if done >= n:
                break
        return {"seconds": time.perf_counter() - start}


async def latency(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        waits: list[float] = []
        sent: dict[str, float] = {}

        async def consume() -> None:
            async for delivery in broker.consume(["default"], prefetch=4):
                waits.append((time.perf_counter() - sent[delivery.envelope.id]) * 1000)
                await broker.ack(delivery)
                if len(waits) >= LATENCY_N:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        for i in range(LATENCY_N):
            env = Envelope(name="bench.noop")
            sent[env.id] = time.perf_counter()
            await broker.publish(env)
            await asyncio.sleep(max(0.0, start + (i + 1) * LATENCY_GAP_S - time.perf_counter()))
        await asyncio.wait_for(task, 60)
        waits.sort()
        return {"seconds": time.perf_counter() - start, "n": LATENCY_N,
                "p50_ms": waits[len(waits) // 2], "p99_ms": waits[int(len(waits) * 0.99) - 1]}


async def stats_cost(url: str, ns: str, size: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        envs = _envelopes(size)
        for i in range(0, size, 1000):
            await broker.publish_many(envs[i:i + 1000])
        await broker.queue_stats(["default"])
        start = time.perf_counter()
        for _ in range(STATS_CALLS):
            await broker.queue_stats(["default"])
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "n": STATS_CALLS, "queue_length": size, "ms_per_call": seconds / STATS_CALLS * 1000}


async def _once(url: str, fn: Any, *args: Any) -> dict[str, Any]:
    ns = "bench" + uuid.uuid4().hex[:8]
    try:
        return await fn(url, ns, *args)
    finally:
        await delete_namespace(url, ns)


async def _floor_once(url: str, mode: str, n: int) -> dict[str, Any]:
    client = redis_floor.Redis.from_url(url, protocol=2)
    key = f"stem-floor:{uuid.uuid4().hex[:10]}"
    try:
        return {"seconds": await redis_floor.MODES[mode](client, key, n)}
    finally:
        await client.delete(key)
        await client.aclose()


def _median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    results = sorted(results, key=lambda r: r["seconds"])
    median = dict(results[len(results) // 2])
    if "p50_ms" in median:
        median["p50_ms"] = round(statistics.median(r["p50_ms"] for r in results), 3)
        median["p99_ms"] = round(statistics.median(r["p99_ms"] for r in results), 3)
    return median


def _line(system: str, mode: str, n: int, result: dict[str, Any]) -> dict[str, Any]:
    result = dict(result)
    n = result.pop("n", n)
    seconds = result.pop("seconds")
    line = {"system": system, "mode": mode, "n": n, "seconds": round(seconds, 4), "rate": round(n / seconds, 1)}
    line.update({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})
    return line


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=redis_floor.DEFAULT_URL)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=200_000, help="pending messages for the large stats case")
    parser.add_argument("--modes", default="enqueue,bulk,drain,latency,stats")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    for mode, fn in (("enqueue", enqueue), ("bulk", bulk), ("drain", drain)):
        if mode not in modes:
            continue
        # Floor and Stem alternate run by run, so a busy moment hits both alike.
        floors, stems = [], []
        for _ in range(args.runs):
            floors.append(await _floor_once(args.url, mode, args.n))
            stems.append(await _once(args.url, fn, args.n))
        floor_line = _line("redis-floor", mode, args.n, _median_of(floors))
        stem_line = _line("stem-redis-broker", mode, args.n, _median_of(stems))
        stem_line["x_floor"] = round(stem_line["rate"] / floor_line["rate"], 3)
        print(json.dumps(floor_line), flush=True)
        print(json.dumps(stem_line), flush=True)
    if "latency" in modes:
        results = [await _once(args.url, latency, args.n) for _ in range(args.runs)]
        print(json.dumps(_line("stem-redis-broker", "latency", args.n, _median_of(results))), flush=True)
    if "stats" in modes:
        for size in (10, args.big):
            result = await _once(args.url, stats_cost, size)
            print(json.dumps({"system": "stem-redis-broker", "mode": "stats", "queue_length": size,
                              "ms_per_call": round(result["ms_per_call"], 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
