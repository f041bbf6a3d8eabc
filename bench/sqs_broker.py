"""What the SQS broker costs in requests (SQS bills per request), counted at the client,
with the throughput beside it (moto is no speed reference; the figure is for scale).

* ``enqueue``: ``broker.publish`` N times, each awaited before the next;
* ``bulk``: ``broker.publish_many`` in batches of 100;
* ``drain-cC-pP``: N queued first, then an in-process ``Worker`` (concurrency C, prefetch
  P, a no-op task, in-memory result backend) runs them all; every request it makes
  counts (receives, deletes, lease renewals, its control subscription);
* ``idle``: a worker with nothing to do, counted over ``--idle-seconds`` after a warm-up
  that lets its long polls reach their full wait, scaled to an hour; also per SQS queue
  it waits on (the task queue's band and its broadcast subscriber queue).

Targets (SPEC §11): a steady drain at most 0.5 requests per task, an idle worker at most
200 requests an hour per queue. Prints JSON lines (``"system": "stem-sqs-broker"``) with
``requests_per_1000``. Starts its own moto server unless ``--url`` names an SQS endpoint.
Usage: ``python bench/sqs_broker.py [--url sqs://...] [--n 2000] [--idle-seconds 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stem_core import Envelope, Stem, Worker, connect_broker  # noqa: E402
from stem_core.adapters.sqs import SQSBroker  # noqa: E402

BATCH = 100
QUEUE = "bench"
# Long polls start at 1 s and double to 20 s: past this the idle worker is in its steady state.
IDLE_WARMUP_S = 45.0
MOTO_START_S = 60.0
DRAINS = ((2, None), (2, 20), (20, None))


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + MOTO_START_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto server did not start") from None
                time.sleep(0.1)
        yield f"sqs://testing:testing@?region=us-east-1&endpoint=http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope(name="bench.noop", queue=QUEUE, args={"i": i}) for i in range(n)]


def _line(mode: str, n: int, requests: int, seconds: float, **extra: Any) -> dict[str, Any]:
    line = {"system": "stem-sqs-broker", "mode": mode, "n": n, "requests": requests,
            "requests_per_1000": round(requests / n * 1000, 1), "seconds": round(seconds, 3),
            "rate": round(n / seconds, 1)}
    line.update(extra)
    return line


async def enqueue(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        assert isinstance(broker, SQSBroker)
        await broker.publish(Envelope(name="warm", queue=QUEUE))  # the queue exists before counting
        envs = _envelopes(n)
        before, start = broker.requests, time.perf_counter()
        for env in envs:
            await broker.publish(env)
        return _line("enqueue", n, broker.requests - before, time.perf_counter() - start)


async def bulk(url: str, ns: str, n: int) -> dict[str, Any]:
    async with await connect_broker(url, namespace=ns) as broker:
        assert isinstance(broker, SQSBroker)
        await broker.publish(Envelope(name="warm", queue=QUEUE))
        envs = _envelopes(n)
        before, start = broker.requests, time.perf_counter()
        for i in range(0, n, BATCH):
            await broker.publish_many(envs[i:i + BATCH])
        return _line("bulk", n, broker.requests - before, time.perf_counter() - start)


def _app(url: str, ns: str) -> Stem:
    app = Stem(broker=url, backend=f"memory://{ns}", namespace=ns)

    @app.task(name="bench.noop", queue=QUEUE)
    async def noop(ctx: Any, i: int) -> None:
        return None

    return app


async def drain(url: str, ns: str, n: int, concurrency: int, prefetch: int | None) -> dict[str, Any]:
    app = _app(url, ns)
    try:
        await app.connect()
        await app.broker.publish_many(_envelopes(n))
        broker = app.broker
        assert isinstance(broker, SQSBroker)
        worker = Worker(app, queues=[QUEUE], concurrency=concurrency, prefetch=prefetch)
        before, start = broker.requests, time.perf_counter()
        runner = asyncio.create_task(worker.run())
        while worker.counters.processed < n and not runner.done():
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - start
        worker.request_stop("warm")
        await runner
        await broker.parts.batches.drain()
        used = broker.requests - before
        return _line(f"drain-c{concurrency}-p{worker.prefetch}", n, used, seconds,
                     by_operation=dict(sorted(broker.request_counts.items())))
    finally:
        await app.close()


async def idle(url: str, ns: str, seconds: float) -> dict[str, Any]:
    app = _app(url, ns)
    try:
        await app.connect()
        broker = app.broker
        assert isinstance(broker, SQSBroker)
        worker = Worker(app, queues=[QUEUE], concurrency=4)
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(IDLE_WARMUP_S)
        before = broker.requests
        await asyncio.sleep(seconds)
        used = broker.requests - before
        worker.request_stop("warm")
        await runner
        per_hour = used / seconds * 3600
        watched = 1 + (1 if broker.capabilities.broadcast else 0)  # the band queue, the control subscriber queue
        return {"system": "stem-sqs-broker", "mode": "idle", "seconds": round(seconds, 1), "requests": used,
                "requests_per_hour": round(per_hour, 1), "sqs_queues_waited_on": watched,
                "requests_per_hour_per_queue": round(per_hour / watched, 1)}
    finally:
        await app.close()


async def run(url: str, args: argparse.Namespace) -> None:
    modes = [m for m in args.modes.split(",") if m]
    jobs: list[tuple[str, Any]] = []
    if "enqueue" in modes:
        jobs.append(("enqueue", lambda ns: enqueue(url, ns, args.n)))
    if "bulk" in modes:
        jobs.append(("bulk", lambda ns: bulk(url, ns, args.n)))
    if "drain" in modes:
        for concurrency, prefetch in DRAINS:
            jobs.append(("drain", lambda ns, c=concurrency, p=prefetch: drain(url, ns, args.n, c, p)))
    if "idle" in modes:
        jobs.append(("idle", lambda ns: idle(url, ns, args.idle_seconds)))
    for _, job in jobs:
        print(json.dumps(await job("bench" + uuid.uuid4().hex[:8])), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an sqs:// URL (default: a moto server started here)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--modes", default="enqueue,bulk,drain,idle")
    args = parser.parse_args(argv)
    if args.url:
        asyncio.run(run(args.url, args))
        return
    with moto_server() as url:
        asyncio.run(run(url, args))


if __name__ == "__main__":
    main()
