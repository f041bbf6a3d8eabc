"""The producer of ``stem demo`` (its own process): keeps the demo's mix of tasks flowing.

    python -m stem_tui.demo_producer --rate 20     # URLs and namespace from STEM_* variables

Every tick it enqueues about ``rate x TICK_S`` tasks, mostly emails and thumbnails, some
reports and invoices, and an export every ``EXPORT_EVERY_S``; now and then a burst.
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys

from .demo_app import app

TICK_S = 0.5
EXPORT_EVERY_S = 6.0
# One tick in BURST_ODDS is a burst of BURST_FACTOR times the usual amount.
BURST_ODDS = 40
BURST_FACTOR = 8
# (task, share of the mix)
MIX = (("email.send", 0.5), ("thumb.make", 0.3), ("invoice.charge", 0.15), ("report.build", 0.05))


def task_args(name: str, n: int) -> dict[str, object]:
    if name == "email.send":
        return {"to": f"user{n % 500}@example.com", "subject": random.choice(["welcome", "receipt", "reset password"])}
    if name == "thumb.make":
        return {"image": f"img/{n}.jpg", "size": random.choice([64, 128, 256])}
    if name == "invoice.charge":
        return {"invoice": f"INV-{n:06d}", "amount": round(random.uniform(5, 500), 2)}
    return {"report_id": n, "pages": random.randint(2, 6)}


async def produce(rate: float, stop: asyncio.Event) -> None:
    names = [name for name, _ in MIX]
    weights = [share for _, share in MIX]
    n = 0
    since_export = EXPORT_EVERY_S
    try:
        while not stop.is_set():
            count = max(1, round(rate * TICK_S * random.uniform(0.5, 1.5)))
            if random.randrange(BURST_ODDS) == 0:
                count *= BURST_FACTOR
            items = []
            for name in random.choices(names, weights, k=count):
                n += 1
                items.append((name, task_args(name, n)))
            since_export += TICK_S
            if since_export >= EXPORT_EVERY_S:
                since_export = 0.0
                n += 1
                items.append(("export.generate", {"export_id": n, "rows": random.randint(1000, 50000)}))
            await app.enqueue_many(items)
            try:
                await asyncio.wait_for(stop.wait(), TICK_S)
            except TimeoutError:
                pass
    finally:
        await app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stem_tui.demo_producer")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks per second on average")
    options = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await produce(options.rate, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
