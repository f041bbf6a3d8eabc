"""Memory soak for the Redis adapter: a steady ``--rate`` tasks/s for ``--minutes`` through
``app.enqueue`` and a ``stem worker`` process (concurrency 2, results stored), sampling
Redis ``used_memory`` and the worker's resident memory.

It runs its own ``redis-server`` on a free port (no persistence), so ``used_memory`` is
Stem's alone and the shared server is never touched. Results are kept ``--result-ttl``
seconds (default 60), so after the first TTL the number of stored statuses is steady:
memory must then stay flat. Prints one JSON line per sample and a summary comparing the
first and last thirds of the samples taken after the warm-up:
``{"system": "stem-redis-soak", "t": ..., "used_memory": ..., "worker_rss": ..., "keys": ..., "done": ...}``.

``--backlog N`` drains at the worker's maximum rate instead: the producer keeps about N
tasks queued (``enqueue_many`` batches of 100 whenever the backlog falls under N), so the
worker is never idle and Redis holds a steady number of messages (issue 16's memory check).

Usage: ``python bench/redis_soak.py --minutes 10 [--rate 300 | --backlog 5000] [--sample 10] [--result-ttl 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from stem_core import Stem  # noqa: E402
from stem_core.worker import TaskContext  # noqa: E402

NAMESPACE = "soak"
DONE_KEY = "soak:done"
APP_PATH = "bench.redis_soak:app"
WORKER_CONCURRENCY = 2
SERVER_START_S = 15.0
BULK = 100

_done_client: Any = None


def register(stem: Stem) -> Stem:
    @stem.task(name="soak.noop")
    async def noop(ctx: TaskContext) -> None:
        global _done_client
        if _done_client is None:
            _done_client = Redis.from_url(os.environ["STEM_SOAK_REDIS"])
        await _done_client.incr(DONE_KEY)

    return stem


# The app `stem worker --app bench.redis_soak:app` runs; URLs come from its flags.
app = register(Stem())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _wait_server(url: str) -> None:
    deadline = time.monotonic() + SERVER_START_S
    client = Redis.from_url(url)
    try:
        while True:
            try:
                await client.ping()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def _trend(samples: list[dict[str, Any]], field: str) -> dict[str, Any]:
    third = max(1, len(samples) // 3)
    first = statistics.mean(s[field] for s in samples[:third])
    last = statistics.mean(s[field] for s in samples[-third:])
    return {"first_third_mean": round(first), "last_third_mean": round(last), "change_pct": round((last - first) / first * 100, 2)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=300.0, help="tasks per second")
    parser.add_argument("--backlog", type=int, default=0,
                        help="keep about this many tasks queued (the worker's maximum rate) instead of --rate")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--result-ttl", type=float, default=60.0, help="seconds results are kept")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="stem-soak-"))
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(workdir), "--logfile", str(workdir / "redis.log")])
    worker = None
    try:
        await _wait_server(url)
        backend_url = f"{url}?result_ttl={args.result_ttl}"
        stem = register(Stem(broker=url, backend=backend_url, namespace=NAMESPACE))
        await stem.connect()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STEM_SOAK_REDIS": url}
        worker = subprocess.Popen(
            [sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", APP_PATH, "--broker", url,
             "--backend", backend_url, "--namespace", NAMESPACE, "-c", str(WORKER_CONCURRENCY), "--loglevel", "warning"],
            cwd=ROOT, env=env,
        )
        admin = Redis.from_url(url)
        start = time.monotonic()
        end = start + args.minutes * 60
        sent = 0
        next_sample = start + args.sample
        samples: list[dict[str, Any]] = []
        done = 0
        while time.monotonic() < end:
            if args.backlog:
                done = int(await admin.get(DONE_KEY) or 0)
                while sent - done < args.backlog:
                    await stem.enqueue_many([("soak.noop", {})] * BULK)
                    sent += BULK
            else:
                # Fixed cadence: catch up to where the clock says we should be.
                due = int((time.monotonic() - start) * args.rate)
                while sent < due:
                    await stem.enqueue("soak.noop", {})
                    sent += 1
            if time.monotonic() >= next_sample:
                next_sample += args.sample
                info = await admin.info("memory")
                done = int(await admin.get(DONE_KEY) or 0)
                sample = {"system": "stem-redis-soak", "t": round(time.monotonic() - start, 1),
                          "used_memory": info["used_memory"], "worker_rss": _rss_bytes(worker.pid),
                          "keys": await admin.dbsize(), "sent": sent, "done": done, "backlog": sent - done}
                samples.append(sample)
                print(json.dumps(sample), flush=True)
            await asyncio.sleep(0.1 if args.backlog else 1.0 / args.rate)
        warm = [s for s in samples if s["t"] > args.result_ttl * 1.5] or samples
        drained = samples[-1]["done"] if samples else 0
        print(json.dumps({"system": "stem-redis-soak", "summary": True, "minutes": args.minutes,
                          "rate": round(drained / (args.minutes * 60)) if args.backlog else args.rate,
                          "backlog_kept": args.backlog or None,
                          "sent": sent, "done": samples[-1]["done"] if samples else 0,
                          "used_memory": _trend(warm, "used_memory"), "worker_rss": _trend(warm, "worker_rss"),
                          "keys": _trend(warm, "keys"), "samples_after_warmup": len(warm)}), flush=True)
        await admin.aclose()
        await stem.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        server.kill()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
