"""A chaos worker process: the real ``stem_core.Worker`` running ``tests.chaos.tasks``,
with its broker's settle calls recorded in the process history.

``python -m tests.chaos.worker --broker URL --backend URL --namespace NS [-c 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from typing import Any, Awaitable, Callable

from stem_core import Stem, Worker
from tests.chaos.history import History, current
from tests.chaos.tasks import register


def instrument(broker: Any, history: History) -> None:
    """Record every ``ack``/``ack_with_status``/``nack``/``dead_letter``/``requeue`` of
    ``broker`` after it returned (or with ``error`` when it raised).

    A shutdown gives a delivery back with ``requeue`` then acks the fenced receipt only to
    free its slot: that ack is recorded as ``release``, not as a completion."""
    requeued: set[str] = set()
    # The lease deadline (epoch seconds) each held receipt last got from a renewal.
    renewed: dict[str, float] = {}

    def lease_until(delivery: Any) -> float | None:
        """The latest deadline this worker knows for ``delivery``'s lease."""
        until = delivery.lease_expires_at.timestamp() if delivery.lease_expires_at is not None else None
        later = renewed.get(delivery.receipt)
        return later if until is None or (later is not None and later > until) else until

    def wrap(name: str, describe: Callable[..., dict[str, Any]]) -> None:
        original: Callable[..., Awaitable[Any]] = getattr(broker, name)

        @functools.wraps(original)
        async def recorded(*args: Any, **kwargs: Any) -> Any:
            if name != "requeue" and getattr(args[0], "channel", None) is not None:
                return await original(*args, **kwargs)  # a control broadcast, not a task
            fields = describe(*args, **kwargs)
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                history.record(fields.pop("type"), **fields, error=f"{type(exc).__name__}: {exc}")
                raise
            if fields["type"] in ("ack", "release"):
                # Read after the ack returned: a renewal that landed meanwhile counts. An
                # ack that returns after this has passed may have been fenced (a silent no-op).
                # (Kept after the ack: ack_with_status may ack again inside.)
                fields["lease_until"] = lease_until(args[0])
            if fields["type"] == "requeue":
                if result:
                    requeued.update(fields["ids"])
                    for task_id in fields["ids"]:
                        history.record("requeue", id=task_id)
                return result
            history.record(fields.pop("type"), **fields)
            return result

        setattr(broker, name, recorded)

    def settle(kind: str) -> Callable[..., dict[str, Any]]:
        def describe(delivery: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            task_id = delivery.envelope.id
            fields: dict[str, Any] = {"type": kind, "id": task_id, "deliveries": delivery.delivery_count}
            if kind == "ack" and task_id in requeued:
                requeued.discard(task_id)
                fields["type"] = "release"
            if kind == "nack":
                fields.update(requeue=kwargs.get("requeue", True), delay=kwargs.get("delay"))
            if kind == "dead":
                fields["reason"] = kwargs.get("reason")
            return fields
        return describe

    def ack_with_status(delivery: Any, backend: Any, state: Any, **kwargs: Any) -> dict[str, Any]:
        return {"type": "ack", "id": delivery.envelope.id, "deliveries": delivery.delivery_count, "state": str(state)}

    # ack_with_status may fall back to ack (recorded too: a second ack of the same holder).
    wrap("ack_with_status", ack_with_status)
    wrap("ack", settle("ack"))
    wrap("nack", settle("nack"))
    wrap("dead_letter", settle("dead"))
    wrap("requeue", lambda queue, ids: {"type": "requeue", "ids": list(ids)})
    record_renewals(broker, renewed)
    leases = getattr(getattr(broker, "parts", None), "leases", None)
    if leases is not None and hasattr(leases, "recycle"):
        record_copies(leases, history)


def record_renewals(broker: Any, renewed: dict[str, float]) -> None:
    """Keep the deadline each ``extend_lease`` returned, for the ``lease_until`` of the
    receipt's ack (the checker's ``lease-expired``)."""
    original: Callable[..., Awaitable[Any]] = broker.extend_lease

    @functools.wraps(original)
    async def recorded(delivery: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = await original(delivery, *args, **kwargs)
        if deadline is not None and getattr(delivery, "channel", None) is None:
            renewed[delivery.receipt] = deadline.timestamp()
        return deadline

    broker.extend_lease = recorded


def record_copies(leases: Any, history: History) -> None:
    """SQS fences a redelivery by copying the message (send a copy, then delete the
    original, ``SQSLeases.recycle``): ``recycle`` before and ``recycled`` after, so the
    checker can tell a second copy left by a worker killed in between."""
    original: Callable[..., Awaitable[None]] = leases.recycle

    @functools.wraps(original)
    async def recorded(lease: Any, envelope: Any, *args: Any, **kwargs: Any) -> None:
        history.record("recycle", id=envelope.id)
        await original(lease, envelope, *args, **kwargs)
        history.record("recycled", id=envelope.id)

    leases.recycle = recorded


async def main(opts: argparse.Namespace) -> int:
    history = current("worker")
    assert history is not None, "STEM_CHAOS_HISTORY is not set"
    app = register(Stem(broker=opts.broker, backend=opts.backend, namespace=opts.namespace))
    await app.connect()
    instrument(app.broker, history)
    worker = Worker(app, concurrency=opts.concurrency, heartbeat_interval=1.0, shutdown_grace=opts.grace)
    worker.install_signal_handlers()
    history.record("ready", worker=worker.worker_id)
    try:
        await worker.run()
    finally:
        await app.close()
    history.record("exit", code=worker.exit_code)
    return worker.exit_code


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.worker")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--grace", type=float, default=2.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
