"""Broker-level figures for the RabbitMQ adapter, beside raw aiormq floors measured in the
same run, so the cost of Stem's layer can be read directly.

* ``enqueue``: ``broker.publish`` N times, each awaited before the next (one publisher
  confirm each); floor: ``basic_publish`` with confirms, one at a time;
* ``bulk``: ``broker.publish_many`` in batches of 100; floor: 100 ``basic_publish`` then
  their confirms;
* ``drain``: N queued first, then one consumer (prefetch 100) acks each delivery; floor:
  ``basic_consume`` acking each message;
* ``latency``: an idle consumer, 500 messages published 20 ms apart, publish -> delivery;
* ``stats``: one ``queue_stats`` call with 10 and with ``--big`` pending messages (the cost
  must not grow with the queue).

All messages are persistent, on durable priority queues as Stem declares them. Prints
JSON lines (``"system": "stem-rabbitmq-broker"`` and ``"aiormq-floor"``), each the median
of ``--runs``; floor and Stem runs alternate, and Stem's line carries ``x_floor``. Usage:
``python bench/rabbitmq_broker.py [--url amqp://guest:guest@127.0.0.1:5672/] [--n 20000] [--runs 3] [--big 200000]``.
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

import aiormq  # noqa: E402
from pamqp.commands import Basic  # noqa: E402

from stem_core import Envelope, connect_broker  # noqa: E402
from stem_core.adapters.rabbitmq.topology import work_arguments  # noqa: E402
from tests.specs.rabbitmq import delete_namespace  # noqa: E402

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
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
        await broker.publish(Envelope(name="bench.warm"))  # declares the queue before timing
        start = time.perf_counter()
        for env in envs:
            await broker.publish(env)
        return {"seconds": time.perf_counter() - start}


async def bulk(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        envs = _envelopes(n)
        await broker.publish(Envelope(name="bench.warm"))
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            await broker.publish_many(envs[i:i + BATCH])
        return {"seconds": time.perf_counter() - start}


async def drain(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        envs = _envelopes(n)
        for i in range(0, n, 1000):
            await broker.publish_many(envs[i:i + 1000])
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


# -- the raw aiormq floor ------------------------------------------------------------

async def _floor(url: str, mode: str, n: int) -> float:
    queue = f"stem-floor-{uuid.uuid4().hex[:10]}"
    body = Envelope(name="bench.noop", args={"i": 0}).to_json().encode()
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(queue, durable=True, arguments=work_arguments(queue))

        def props() -> Basic.Properties:
            return Basic.Properties(delivery_mode=2, priority=0, content_type="application/json")

        if mode == "drain":
            for i in range(0, n, 1000):
                await asyncio.gather(*(channel.basic_publish(body, routing_key=queue, properties=props())
                                       for _ in range(min(1000, n - i))))
        start = time.perf_counter()
        if mode == "enqueue":
            for _ in range(n):
                await channel.basic_publish(body, routing_key=queue, properties=props())
        elif mode == "bulk":
            for i in range(0, n, BATCH):
                await asyncio.gather(*(channel.basic_publish(body, routing_key=queue, properties=props())
                                       for _ in range(BATCH)))
        else:
            reader = await connection.channel()
            await reader.basic_qos(prefetch_count=DRAIN_PREFETCH)
            done = asyncio.Event()
            count = 0

            async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                nonlocal count
                await reader.basic_ack(message.delivery_tag or 0)
                count += 1
                if count == n:
                    done.set()

            await reader.basic_consume(queue, on_message)
            await done.wait()
        seconds = time.perf_counter() - start
        await channel.queue_delete(queue)
        return seconds
    finally:
        await connection.close()


# -- runner -------------------------------------------------------------------------

async def _once(url: str, fn: Any, *args: Any) -> dict[str, Any]:
    ns = "bench" + uuid.uuid4().hex[:8]
    try:
        return await fn(url, ns, *args)
    finally:
        await delete_namespace(url, ns)


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
    parser.add_argument("--url", default=DEFAULT_URL)
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
            floors.append({"seconds": await _floor(args.url, mode, args.n)})
            stems.append(await _once(args.url, fn, args.n))
        floor_line = _line("aiormq-floor", mode, args.n, _median_of(floors))
        stem_line = _line("stem-rabbitmq-broker", mode, args.n, _median_of(stems))
        stem_line["x_floor"] = round(stem_line["rate"] / floor_line["rate"], 3)
        print(json.dumps(floor_line), flush=True)
        print(json.dumps(stem_line), flush=True)
    if "latency" in modes:
        results = [await _once(args.url, latency, args.n) for _ in range(args.runs)]
        print(json.dumps(_line("stem-rabbitmq-broker", "latency", args.n, _median_of(results))), flush=True)
    if "stats" in modes:
        for size in (10, args.big):
            result = await _once(args.url, stats_cost, size)
            print(json.dumps({"system": "stem-rabbitmq-broker", "mode": "stats", "queue_length": size,
                              "ms_per_call": round(result["ms_per_call"], 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
