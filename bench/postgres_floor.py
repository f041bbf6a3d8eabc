"""Raw psycopg floors for the PostgreSQL broker: what the server and driver can do with
no queue logic at all, measured the way SPEC §11 measures Stem.

* ``enqueue``: one autocommitted ``INSERT`` per call, each awaited before the next;
* ``bulk``: batched ``INSERT`` (100 rows per statement, one transaction per batch);
* ``drain``: ``FOR UPDATE SKIP LOCKED`` claims of 100 rows, deleted in the same statement.

Rows carry a realistic envelope (the JSON of a small ``Envelope``) in a ``jsonb`` column.
Prints one JSON line per figure. Usage: ``python bench/postgres_floor.py [--n 20000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import psycopg

from stem_core.envelope import Envelope

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
BATCH_SIZE = 100


async def _setup(conn: psycopg.AsyncConnection, schema: str) -> None:
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(
        f'CREATE TABLE "{schema}".jobs (id bigserial PRIMARY KEY, queue text NOT NULL, '
        "priority smallint NOT NULL DEFAULT 0, envelope jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(f'CREATE INDEX ON "{schema}".jobs (queue, priority DESC, id)')


def _payloads(n: int) -> list[str]:
    return [Envelope(name="bench.noop", args={"i": i}).to_json() for i in range(n)]


async def enqueue(url: str, schema: str, n: int) -> float:
    rows = _payloads(n)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        sql = f'INSERT INTO "{schema}".jobs (queue, envelope) VALUES (%s, %s::jsonb)'
        start = time.perf_counter()
        for row in rows:
            await conn.execute(sql, ("default", row))
        return time.perf_counter() - start


async def bulk(url: str, schema: str, n: int) -> float:
    rows = _payloads(n)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        sql = f'INSERT INTO "{schema}".jobs (queue, envelope) SELECT %s, unnest(%s::jsonb[])'
        start = time.perf_counter()
        for i in range(0, n, BATCH_SIZE):
            await conn.execute(sql, ("default", rows[i : i + BATCH_SIZE]))
        return time.perf_counter() - start


async def drain(url: str, schema: str, n: int) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await bulk(url, schema, n)
        sql = (
            f'WITH c AS (SELECT id FROM "{schema}".jobs WHERE queue = %s ORDER BY priority DESC, id '
            f'LIMIT %s FOR UPDATE SKIP LOCKED) DELETE FROM "{schema}".jobs j USING c WHERE j.id = c.id RETURNING j.envelope'
        )
        done = 0
        start = time.perf_counter()
        while done < n:
            cur = await conn.execute(sql, ("default", BATCH_SIZE))
            got = len(await cur.fetchall())
            if not got:
                break
            done += got
        return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for mode, fn in (("enqueue", enqueue), ("bulk", bulk), ("drain", drain)):
        times = []
        for _ in range(args.runs):
            schema = "stem_bench_" + uuid.uuid4().hex[:8]
            async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as conn:
                await _setup(conn, schema)
                try:
                    times.append(await fn(args.url, schema, args.n))
                finally:
                    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        seconds = statistics.median(times)
        line = {"system": "postgres-floor", "mode": mode, "n": args.n, "seconds": round(seconds, 4), "rate": round(args.n / seconds, 1)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
