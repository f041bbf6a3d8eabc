"""The worker side of the control plane: one coroutine per command, returning the reply.

Arguments are checked again here (``normalize_arguments``): a broadcast can come from
any producer, not only ``ControlClient``.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..clock import to_iso, utcnow
from ..control.pause import pause_record
from ..control.protocol import Command, normalize_arguments
from ..control.revoke import revoke_record
from .held import ACTIVE, RESERVED

if TYPE_CHECKING:
    from .runtime import Worker

Handler = Callable[["Worker", dict[str, Any], Command], Awaitable[dict[str, Any]]]


async def handle_command(worker: "Worker", command: Command) -> dict[str, Any]:
    """Run ``command`` on ``worker``; raises ``ValueError`` for bad arguments."""
    args = normalize_arguments(command.command, command.arguments)
    return await _HANDLERS[command.command](worker, args, command)


async def _ping(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    return {"pong": True, "worker_id": worker.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "at": to_iso(utcnow())}


async def _stats(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    return {
        "worker_id": worker.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(worker.queues),
        "paused_queues": worker.paused_queues(),
        "concurrency": worker.concurrency,
        "prefetch": worker.prefetch,
        "active": len(worker.held.in_state(ACTIVE)),
        "reserved": len(worker.held.in_state(RESERVED)),
        "counters": worker.counters.to_dict(),
        "lease_renewals": worker.leases.renewals,
        "started_at": to_iso(worker.started_at),
        "uptime": round(worker.uptime(), 3),
        "stopping": worker.stop_mode,
    }


async def _inspect(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    active = []
    for held in worker.held.in_state(ACTIVE):
        entry = held.info()
        runtime = held.runtime()
        entry["runtime"] = round(runtime, 3) if runtime is not None else None
        entry["cancel_reason"] = held.cancel_reason
        active.append(entry)
    reserved = []
    for held in worker.held.in_state(RESERVED):
        entry = held.info()
        entry["received_at"] = to_iso(held.received_at)
        reserved.append(entry)
    return {
        "worker_id": worker.worker_id,
        "active": active,
        "reserved": reserved,
        "revoked": sorted(worker.revoked_ids()),
        "paused_queues": worker.paused_queues(),
    }


async def _revoke(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    at = to_iso(command.sent_at)
    records = {
        task_id: revoke_record(task_id, terminate=args["terminate"], reason=args["reason"], by=args["by"], revoked_at=at)
        for task_id in args["task_ids"]
    }
    terminated = worker.apply_revocations(records)
    return {"revoked": list(args["task_ids"]), "terminated": terminated}


async def _shutdown(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    # The runtime stops the worker after this reply has been published.
    return {"mode": args["mode"], "active": len(worker.held.in_state(ACTIVE))}


async def _pause(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    at = to_iso(command.sent_at)
    records = {
        queue: pause_record(queue, reason=args["reason"], by=args["by"], paused_at=at, until=args["until"], workers=command.targets)
        for queue in args["queues"]
    }
    worker.merge_pauses(records)
    return {"paused": worker.paused_queues()}


async def _resume(worker: "Worker", args: dict[str, Any], command: Command) -> dict[str, Any]:
    worker.remove_pauses(args["queues"])
    return {"paused": worker.paused_queues()}


_HANDLERS: dict[str, Handler] = {
    "ping": _ping,
    "stats": _stats,
    "inspect": _inspect,
    "revoke": _revoke,
    "shutdown": _shutdown,
    "pause": _pause,
    "resume": _resume,
}

__all__ = ["handle_command"]
