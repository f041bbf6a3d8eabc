"""The worker side of the control plane: one coroutine per command, returning the reply.

A command sees the worker through a ``CommandTarget``: the shared ``ControlState`` (what
``pause``, ``resume`` and ``revoke`` change) and the parts ``stats`` and ``inspect``
report on, each handed over explicitly rather than read off the ``Worker``.

Arguments are checked again here (``normalize_arguments``): a broadcast can come from
any producer, not only ``ControlClient``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from ..clock import to_iso, utcnow
from ..control.pause import pause_record
from ..control.protocol import Command, normalize_arguments
from ..control.revoke import revoke_record
from .control_state import ControlState
from .execution import Counters
from .held import ACTIVE, RESERVED, HeldSet
from .leases import LeaseKeeper


@dataclass(frozen=True, slots=True)
class CommandTarget:
    """The running worker as its commands see it."""

    control: ControlState
    held: HeldSet
    counters: Counters
    leases: LeaseKeeper
    concurrency: int
    prefetch: int
    started_at: datetime

    @property
    def worker_id(self) -> str:
        return self.control.worker_id


Handler = Callable[[CommandTarget, dict[str, Any], Command], Awaitable[dict[str, Any]]]


async def handle_command(target: CommandTarget, command: Command) -> dict[str, Any]:
    """Run ``command`` on ``target``; raises ``ValueError`` for bad arguments."""
    args = normalize_arguments(command.command, command.arguments)
    return await _HANDLERS[command.command](target, args, command)


async def _ping(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    return {"pong": True, "worker_id": target.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "at": to_iso(utcnow())}


async def _stats(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    return {
        "worker_id": target.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(target.control.queues),
        "paused_queues": target.control.paused_queues(),
        "concurrency": target.concurrency,
        "prefetch": target.prefetch,
        "active": len(target.held.in_state(ACTIVE)),
        "reserved": len(target.held.in_state(RESERVED)),
        "counters": target.counters.to_dict(),
        "lease_renewals": target.leases.renewals,
        "started_at": to_iso(target.started_at),
        "uptime": round((utcnow() - target.started_at).total_seconds(), 3),
        "stopping": target.control.stop_mode,
    }


async def _inspect(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    active = []
    for held in target.held.in_state(ACTIVE):
        entry = held.info()
        runtime = held.runtime()
        entry["runtime"] = round(runtime, 3) if runtime is not None else None
        entry["cancel_reason"] = held.cancel_reason
        active.append(entry)
    reserved = []
    for held in target.held.in_state(RESERVED):
        entry = held.info()
        entry["received_at"] = to_iso(held.received_at)
        reserved.append(entry)
    return {
        "worker_id": target.worker_id,
        "active": active,
        "reserved": reserved,
        "revoked": sorted(target.control.revoked_ids()),
        "paused_queues": target.control.paused_queues(),
    }


async def _revoke(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    at = to_iso(command.sent_at)
    records = {
        task_id: revoke_record(task_id, terminate=args["terminate"], reason=args["reason"], by=args["by"], revoked_at=at)
        for task_id in args["task_ids"]
    }
    terminated = target.control.apply_revocations(records)
    return {"revoked": list(args["task_ids"]), "terminated": terminated}


async def _shutdown(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    # The runtime stops the worker after this reply has been published.
    return {"mode": args["mode"], "active": len(target.held.in_state(ACTIVE))}


async def _pause(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    at = to_iso(command.sent_at)
    records = {
        queue: pause_record(queue, reason=args["reason"], by=args["by"], paused_at=at, until=args["until"], workers=command.targets)
        for queue in args["queues"]
    }
    target.control.merge_pauses(records)
    return {"paused": target.control.paused_queues()}


async def _resume(target: CommandTarget, args: dict[str, Any], command: Command) -> dict[str, Any]:
    target.control.remove_pauses(args["queues"])
    return {"paused": target.control.paused_queues()}


_HANDLERS: dict[str, Handler] = {
    "ping": _ping,
    "stats": _stats,
    "inspect": _inspect,
    "revoke": _revoke,
    "shutdown": _shutdown,
    "pause": _pause,
    "resume": _resume,
}

__all__ = ["CommandTarget", "handle_command"]
