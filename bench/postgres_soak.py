"""Dead-tuple soak for the PostgreSQL adapter: a steady ``--rate`` tasks/s for ``--minutes``
through the broker (publish -> claim -> ack) and the result backend (running and
succeeded statuses), sampling ``pg_stat_user_tables`` for the namespace's schema.

Question answered: do dead tuples stay bounded (autovacuum keeps up) and does the claim
stay fast, or does the queue table bloat? Prints one JSON line per sample and a summary:
``{"system": "stem-postgres-soak", "t": seconds, "table": ..., "n_live_tup": ..., "n_dead_tup": ...}``.

Usage: ``python bench/postgres_soak.py --minutes 5 [--rate 150] [--sample 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import psycopg

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.adapters.postgres.connection import quote_ident, schema_name

URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("jobs", "queue_counts", "statuses")
CONSUMER_PREFETCH = 8


async def sample(conn: psycopg.AsyncConnection, schema: str, elapsed: float) -> dict[str, dict[str, int]]:
    cur = await conn.execute(
        "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count, "
        "pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE schemaname = %s AND relname = ANY(%s)",
        (schema, list(TABLES)),
    )
    out = {}
    for name, live, dead, vacuums, analyzes, size in await cur.fetchall():
        out[name] = {"n_live_tup": live, "n_dead_tup": dead, "autovacuum_count": vacuums, "bytes": size}
        print(json.dumps({"system": "stem-postgres-soak", "t": round(elapsed, 1), "table": name, "n_live_tup": live,
                          "n_dead_tup": dead, "autovacuum_count": vacuums, "autoanalyze_count": analyzes,
                          "bytes": size}), flush=True)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=150.0, help="tasks per second")
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    args = parser.parse_args()
    namespace = "soak" + uuid.uuid4().hex[:8]
    schema = schema_name(namespace)
    broker = await connect_broker(URL, namespace=namespace)
    backend = await connect_backend(URL, namespace=namespace)
    stop = asyncio.Event()
    done = 0
    claim_gaps: list[float] = []

    async def produce() -> None:
        interval = 1.0 / args.rate
        next_at = time.perf_counter()
        i = 0
        while not stop.is_set():
            await broker.publish(Envelope(name="soak.noop", args={"i": i}))
            i += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def consume() -> None:
        nonlocal done
        async for delivery in broker.consume("default", prefetch=CONSUMER_PREFETCH):
            started = time.perf_counter()
            await backend.set_status(delivery.envelope.id, "running", meta={"queue": "default", "task": "soak.noop"})
            await backend.set_status(delivery.envelope.id, "succeeded", payload=None,
                                     meta={"queue": "default", "task": "soak.noop"}, ttl=60)
            await broker.ack(delivery)
            claim_gaps.append(time.perf_counter() - started)
            done += 1
            if stop.is_set():
                return

    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        tasks = [asyncio.ensure_future(produce()), asyncio.ensure_future(consume())]
        start = time.perf_counter()
        peaks = {name: 0 for name in TABLES}
        try:
            while time.perf_counter() - start < args.minutes * 60:
                await asyncio.sleep(args.sample)
                for name, row in (await sample(conn, schema, time.perf_counter() - start)).items():
                    peaks[name] = max(peaks[name], row["n_dead_tup"])
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stats = (await broker.queue_stats(["default"]))[0]
            final = await sample(conn, schema, time.perf_counter() - start)
            print(json.dumps({
                "system": "stem-postgres-soak", "summary": True, "minutes": args.minutes, "rate": args.rate,
                "processed": done, "pending_at_end": stats.pending, "peak_dead": peaks,
                "final_dead": {k: v["n_dead_tup"] for k, v in final.items()},
                "handle_ms_p50": round(statistics.median(claim_gaps) * 1000, 3) if claim_gaps else None,
            }), flush=True)
            await broker.close()
            await backend.close()
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


if __name__ == "__main__":
    asyncio.run(main())
