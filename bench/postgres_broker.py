"""Broker-level figures for the PostgreSQL adapter, beside the raw psycopg floors of the
same run (``bench/postgres_floor.py``), so the SPEC §11 ratios can be read directly.

* ``enqueue``: ``broker.publish`` N times, each awaited before the next;
* ``bulk``: ``broker.publish_many`` in batches of 100;
* ``drain``: N queued first, then one consumer (prefetch 200) acks each delivery;
* ``latency``: an idle consumer, 500 messages published 20 ms apart, publish -> delivery;
* ``stats``: ``queue_stats`` cost with 10 and with ``--big`` pending messages.

Prints JSON lines: ``{"system": "stem-postgres-broker", "mode": ..., "n": ..., "seconds": ..., "rate": ...}``.
Usage: ``python bench/postgres_broker.py [--n 20000] [--runs 3] [--big 1000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from stem_core import Envelope, connect_broker
from stem_core.adapters.postgres.connection import quote_ident, schema_name

import postgres_floor

URL = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 100
LATENCY_N = 500
LATENCY_GAP_S = 0.02


async def _drop(namespace: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema_name(namespace))} CASCADE")


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope(name="bench.noop", args={"i": i}) for i in range(n)]


async def enqueue(n: int) -> float:
    ns = "bench" + uuid.uuid4().hex[:8]
    async with await connect_broker(URL, namespace=ns) as broker:
        try:
            envs = _envelopes(n)
            start = time.perf_counter()
            for env in envs:
                await broker.publish(env)
            return time.perf_counter() - start
        finally:
            await _drop(ns)


async def bulk(n: int) -> float:
    ns = "bench" + uuid.uuid4().hex[:8]
    async with await connect_broker(URL, namespace=ns) as broker:
        try:
            envs = _envelopes(n)
            start = time.perf_counter()
            for i in range(0, n, BATCH):
                await broker.publish_many(envs[i : i + BATCH])
            return time.perf_counter() - start
        finally:
            await _drop(ns)


async def drain(n: int) -> float:
    ns = "bench" + uuid.uuid4().hex[:8]
    async with await connect_broker(URL, namespace=ns) as broker:
        try:
            envs = _envelopes(n)
            for i in range(0, n, 1000):
                await broker.publish_many(envs[i : i + 1000])
            done = 0
            start = time.perf_counter()
            async for delivery in broker.consume("default", prefetch=200):
                await broker.ack(delivery)
                done += 1
                if done == n:
                    break
            return time.perf_counter() - start
        finally:
            await _drop(ns)


async def latency() -> tuple[float, float]:
    ns = "bench" + uuid.uuid4().hex[:8]
    async with await connect_broker(URL, namespace=ns) as producer, await connect_broker(URL, namespace=ns) as consumer:
        try:
            sent: dict[str, float] = {}
            lags: list[float] = []

            async def consume() -> None:
                async for delivery in consumer.consume("default", prefetch=4):
                    lags.append(time.perf_counter() - sent[delivery.envelope.id])
                    await consumer.ack(delivery)
                    if len(lags) == LATENCY_N:
                        return

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.5)
            for env in _envelopes(LATENCY_N):
                sent[env.id] = time.perf_counter()
                await producer.publish(env)
                await asyncio.sleep(LATENCY_GAP_S)
            await asyncio.wait_for(task, 30)
            lags.sort()
            return lags[len(lags) // 2] * 1000, lags[int(len(lags) * 0.99)] * 1000
        finally:
            await _drop(ns)


async def stats_cost(big: int) -> dict[int, float]:
    import psycopg

    out = {}
    for size in (10, big):
        ns = "bench" + uuid.uuid4().hex[:8]
        async with await connect_broker(URL, namespace=ns) as broker:
            try:
                schema = quote_ident(schema_name(ns))
                async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
                    await conn.execute(
                        f"INSERT INTO {schema}.jobs (msg_id, queue, name, priority, state, ready_at, envelope) "
                        "SELECT g::text, 'default', 'bench.noop', g %% 10, 'ready', now() - g * interval '1 ms', "
                        "'{\"name\": \"bench.noop\"}'::jsonb FROM generate_series(1, %s) g", (size,))
                    await conn.execute(f"VACUUM ANALYZE {schema}.jobs")
                for _ in range(20):
                    await broker.queue_stats(["default"])
                times = []
                for _ in range(200):
                    start = time.perf_counter()
                    stats = await broker.queue_stats(["default"])
                    times.append(time.perf_counter() - start)
                assert stats[0].pending == size, stats
                out[size] = statistics.median(times) * 1000
            finally:
                await _drop(ns)
    return out


def emit(system: str, mode: str, n: int, seconds: float, **extra: float) -> None:
    line = {"system": system, "mode": mode, "n": n, "seconds": round(seconds, 4), "rate": round(n / seconds, 1), **extra}
    print(json.dumps(line), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--skip-floor", action="store_true")
    args = parser.parse_args()
    floors = {}
    for mode, fn, floor_fn in (("enqueue", enqueue, postgres_floor.enqueue), ("bulk", bulk, postgres_floor.bulk),
                               ("drain", drain, postgres_floor.drain)):
        ours, raw = [], []
        for _ in range(args.runs):
            ours.append(await fn(args.n))
            if not args.skip_floor:
                schema = "stem_bench_" + uuid.uuid4().hex[:8]
                import psycopg

                async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
                    await postgres_floor._setup(conn, schema)
                    try:
                        raw.append(await floor_fn(URL, schema, args.n))
                    finally:
                        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        if raw:
            floors[mode] = statistics.median(raw)
            emit("postgres-floor", mode, args.n, floors[mode])
        seconds = statistics.median(ours)
        extra = {"x_floor": round(floors[mode] / seconds, 3)} if mode in floors else {}
        emit("stem-postgres-broker", mode, args.n, seconds, **extra)
    p50s, p99s = [], []
    for _ in range(args.runs):
        p50, p99 = await latency()
        p50s.append(p50)
        p99s.append(p99)
    print(json.dumps({"system": "stem-postgres-broker", "mode": "latency", "n": LATENCY_N,
                      "p50_ms": round(statistics.median(p50s), 3), "p99_ms": round(statistics.median(p99s), 3)}), flush=True)
    if args.big:
        cost = await stats_cost(args.big)
        print(json.dumps({"system": "stem-postgres-broker", "mode": "queue_stats", "ms_at_10": round(cost[10], 3),
                          f"ms_at_{args.big}": round(cost[args.big], 3)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
