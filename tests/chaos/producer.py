"""A chaos producer process: enqueues ``--count`` tasks with ids it chooses
(``<prefix>-<n>``), in batches spread over ``--seconds``, recording ``invoke`` before and
``ok`` / ``info`` after each batch.

``python -m tests.chaos.producer --broker URL --backend URL --namespace NS --count N``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timezone

from stem_core import Stem
from stem_core.errors import InvalidEnvelope, StemError
from tests.chaos.history import current
from tests.chaos.tasks import WORK, register


async def main(opts: argparse.Namespace) -> int:
    history = current("producer")
    assert history is not None, "STEM_CHAOS_HISTORY is not set"
    app = register(Stem(broker=opts.broker, backend=opts.backend, namespace=opts.namespace))
    try:
        await app.connect()
        batches = max(1, -(-opts.count // opts.batch))
        pause = opts.seconds / batches
        loop = asyncio.get_running_loop()
        for start in range(0, opts.count, opts.batch):
            began = loop.time()
            ids = [f"{opts.prefix}-{n:07d}" for n in range(start, min(start + opts.batch, opts.count))]
            due = [_due(opts, n) for n in range(start, start + len(ids))]
            items = [(WORK, {"i": n, "sleep": opts.sleep}, _options(task_id, when))
                     for n, task_id, when in zip(range(start, start + len(ids)), ids, due)]
            for task_id, when in zip(ids, due):
                history.record("invoke", id=task_id, expect="ok", **({"not_before": when} if when else {}))
            try:
                await app.enqueue_many(items)
            except InvalidEnvelope as exc:  # refused before anything was written
                for task_id in ids:
                    history.record("fail", id=task_id, error=str(exc))
            except (StemError, OSError, asyncio.TimeoutError) as exc:
                # Indeterminate: the batch may or may not be stored.
                for task_id in ids:
                    history.record("info", id=task_id, error=f"{type(exc).__name__}: {exc}")
            else:
                for task_id in ids:
                    history.record("ok", id=task_id)
            await asyncio.sleep(max(0.0, pause - (loop.time() - began)))
    finally:
        await app.close()
    history.record("done")
    return 0


def _due(opts: argparse.Namespace, n: int) -> float | None:
    """The task's not_before (epoch seconds): ``--due-at``, or spread over ``--due-in``."""
    if opts.due_at:
        return float(opts.due_at)
    if opts.due_in:
        low, high = opts.due_in
        return time.time() + low + (high - low) * (n % 97) / 96
    return None


def _options(task_id: str, when: float | None) -> dict[str, object]:
    options: dict[str, object] = {"task_id": task_id}
    if when is not None:
        options["eta"] = datetime.fromtimestamp(when, timezone.utc)
    return options


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.producer")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--sleep", type=float, default=0.005)
    parser.add_argument("--prefix", default="p0")
    parser.add_argument("--due-at", type=float, default=None, help="every task's not_before (epoch seconds)")
    parser.add_argument("--due-in", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="not_before spread MIN..MAX seconds after each enqueue")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
