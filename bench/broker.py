"""Broker-level figures for any broker URL, through the public contract only.

* ``publish``: ``broker.publish`` N times, each awaited before the next;
* ``publish_many``: the same N through ``publish_many`` in batches of 100;
* ``consume_ack``: N queued first, then one subscription (prefetch 100) acks each delivery;
* ``latency``: an idle consumer in this process, messages published 20 ms apart,
  publish -> delivery p50/p99.

Each figure is the median of ``--runs`` runs, each on a fresh namespace (and, for
``memory://``, a fresh store). Prints one JSON line per figure (SPEC §11):
``{"system": "stem-memory", "mode": "publish", "n": 20000, "seconds": ..., "rate": ...}``;
latency lines carry ``p50_ms`` and ``p99_ms``.

Usage: ``python bench/broker.py [--url URL]... [--n 20000] [--latency-n 500] [--runs 3]``
(default URLs: ``memory://`` and a temporary SQLite file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

from stem_core import Broker, Envelope, connect_broker
from stem_core.adapters import url_scheme

BATCH = 100
DRAIN_PREFETCH = 100
LATENCY_GAP_S = 0.02
READY_DEADLINE_S = 30.0
QUEUE = "bench"


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope(name="bench.noop", queue=QUEUE, args={"i": i}) for i in range(n)]


class Target:
    """One broker URL; ``open()`` gives a broker on a fresh namespace (and memory store)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scheme = url_scheme(url)
        self.system = f"stem-{'postgres' if self.scheme == 'postgresql' else self.scheme}"

    async def open(self) -> tuple[Broker, Callable[[], Awaitable[None]]]:
        namespace = "bench" + uuid.uuid4().hex[:8]
        url = f"memory://bench-{uuid.uuid4().hex[:8]}" if self.scheme == "memory" else self.url
        broker = await connect_broker(url, namespace=namespace)

        async def done() -> None:
            # Leave nothing behind on a shared server: empty the queue, then let go.
            try:
                await broker.purge(QUEUE)
                await broker.purge_dead_letters(QUEUE)
            finally:
                await broker.close()
                if self.scheme == "memory":
                    from stem_core.adapters.memory import drop_stores

                    drop_stores(url.removeprefix("memory://"))

        return broker, done


async def publish_one_by_one(target: Target, n: int) -> float:
    broker, done = await target.open()
    try:
        envs = _envelopes(n)
        start = time.perf_counter()
        for env in envs:
            await broker.publish(env)
        return time.perf_counter() - start
    finally:
        await done()


async def publish_batches(target: Target, n: int) -> float:
    broker, done = await target.open()
    try:
        envs = _envelopes(n)
        start = time.perf_counter()
        for i in range(0, n, BATCH):
            await broker.publish_many(envs[i:i + BATCH])
        return time.perf_counter() - start
    finally:
        await done()


async def consume_ack(target: Target, n: int) -> float:
    broker, done = await target.open()
    try:
        envs = _envelopes(n)
        for i in range(0, n, 1000):
            await broker.publish_many(envs[i:i + 1000])
        count = 0
        start = time.perf_counter()
        deliveries = broker.consume(QUEUE, prefetch=DRAIN_PREFETCH)
        try:
            async for delivery in deliveries:
                await broker.ack(delivery)
                count += 1
                if count == n:
                    break
        finally:
            await deliveries.aclose()  # type: ignore[attr-defined]
        return time.perf_counter() - start
    finally:
        await done()


async def latency(target: Target, n: int) -> tuple[float, float]:
    """(p50 ms, p99 ms) from publish to delivery at an idle consumer."""
    broker, done = await target.open()
    sent: dict[str, float] = {}
    seen: list[float] = []
    ready = asyncio.Event()
    finished = asyncio.Event()

    async def consume() -> None:
        deliveries = broker.consume(QUEUE, prefetch=10)
        try:
            async for delivery in deliveries:
                arrived = time.perf_counter()
                await broker.ack(delivery)
                if delivery.envelope.name == "bench.marker":
                    ready.set()
                    continue
                seen.append(arrived - sent[delivery.envelope.id])
                if len(seen) == n:
                    finished.set()
                    return
        finally:
            await deliveries.aclose()  # type: ignore[attr-defined]

    task = asyncio.create_task(consume())
    try:
        # The consumer is idle and certainly subscribed once a marker came back through it.
        await broker.publish(Envelope(name="bench.marker", queue=QUEUE))
        await asyncio.wait_for(ready.wait(), READY_DEADLINE_S)
        for env in _envelopes(n):
            await asyncio.sleep(LATENCY_GAP_S)
            sent[env.id] = time.perf_counter()
            await broker.publish(env)
        await asyncio.wait_for(finished.wait(), READY_DEADLINE_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await done()
    ordered = sorted(seen)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def _line(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def bench(target: Target, n: int, latency_n: int, runs: int) -> None:
    for mode, fn in (("publish", publish_one_by_one), ("publish_many", publish_batches), ("consume_ack", consume_ack)):
        seconds = statistics.median([await fn(target, n) for _ in range(runs)])
        _line(system=target.system, mode=mode, n=n, seconds=round(seconds, 4), rate=round(n / seconds, 1))
    results = [await latency(target, latency_n) for _ in range(runs)]
    _line(
        system=target.system, mode="latency", n=latency_n,
        p50_ms=round(statistics.median(r[0] for r in results), 3),
        p99_ms=round(statistics.median(r[1] for r in results), 3),
    )


def _default_urls(tmp: Path) -> list[str]:
    urls = ["memory://"]
    try:
        import stem_core.adapters.sqlite  # noqa: F401
    except ImportError:
        print("sqlite adapter not available: skipping it", file=sys.stderr)
    else:
        urls.append(f"sqlite://{(tmp / 'bench.db').as_posix()}")
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help="broker URL (repeatable)")
    parser.add_argument("--n", type=int, default=20_000, help="messages per throughput figure")
    parser.add_argument("--latency-n", type=int, default=500, help="messages in the latency figure")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stem-bench-") as tmp:
        for url in args.url or _default_urls(Path(tmp)):
            asyncio.run(bench(Target(url), args.n, args.latency_n, args.runs))


if __name__ == "__main__":
    main()
