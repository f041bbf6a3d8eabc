"""Raw redis-py floors for the Redis broker: what the server and driver do with no queue
logic at all, measured the way SPEC §11 measures Stem (one process, hiredis, RESP2).

* ``enqueue``: one ``XADD`` per call, each awaited before the next;
* ``bulk``: pipelined ``XADD`` (100 per round trip, no transaction);
* ``drain``: ``XREADGROUP COUNT 100`` + one ``XACK`` of the batch, until the stream is read.

Entries carry a realistic envelope (the JSON of a small ``Envelope``). Prints one JSON
line per figure (median of ``--runs``). Usage:
``python bench/redis_floor.py [--url redis://127.0.0.1:6379/13] [--n 20000] [--runs 3]``.
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

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stem_core.envelope import Envelope  # noqa: E402

DEFAULT_URL = "redis://127.0.0.1:6379/13"
BATCH_SIZE = 100
GROUP = "g"


def _payloads(n: int) -> list[str]:
    return [Envelope(name="bench.noop", args={"i": i}).to_json() for i in range(n)]


async def enqueue(client: Redis, key: str, n: int) -> float:
    rows = _payloads(n)
    start = time.perf_counter()
    for row in rows:
        await client.xadd(key, {"e": row})
    return time.perf_counter() - start


async def bulk(client: Redis, key: str, n: int) -> float:
    rows = _payloads(n)
    start = time.perf_counter()
    for i in range(0, n, BATCH_SIZE):
        async with client.pipeline(transaction=False) as pipe:
            for row in rows[i:i + BATCH_SIZE]:
                pipe.xadd(key, {"e": row})
            await pipe.execute()
    return time.perf_counter() - start


async def drain(client: Redis, key: str, n: int) -> float:
    await bulk(client, key, n)
    await client.xgroup_create(key, GROUP, id="0")
    done = 0
    start = time.perf_counter()
    while done < n:
        reply = await client.xreadgroup(GROUP, "c", {key: ">"}, count=BATCH_SIZE)
        if not reply:
            break
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(key, GROUP, *ids)
        done += len(ids)
    return time.perf_counter() - start


MODES = {"enqueue": enqueue, "bulk": bulk, "drain": drain}


async def measure(url: str, mode: str, n: int, runs: int) -> dict[str, object]:
    client = Redis.from_url(url, protocol=2)
    try:
        times = []
        for _ in range(runs):
            key = f"stem-floor:{uuid.uuid4().hex[:10]}"
            try:
                times.append(await MODES[mode](client, key, n))
            finally:
                await client.delete(key)
        seconds = statistics.median(times)
        return {"system": "redis-floor", "mode": mode, "n": n, "seconds": round(seconds, 4), "rate": round(n / seconds, 1)}
    finally:
        await client.aclose()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    for mode in [m for m in args.modes.split(",") if m]:
        print(json.dumps(await measure(args.url, mode, args.n, args.runs)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
