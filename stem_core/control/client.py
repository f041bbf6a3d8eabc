"""``ControlClient``: send a command to the workers and collect their replies.

    client = ControlClient(broker, backend)
    result = await client.send("ping", timeout=5.0)
    result.replies   # {worker_id: {...}}
    result.missing   # targeted workers that did not answer in time

The targeted set is ``targets`` when given, else the workers whose heartbeat is live
(younger than ``stale_after``, see ``liveness``): a worker that died moments ago but whose
heartbeat has not expired yet is not waited for. With nobody targeted, replies are
collected until the timeout.
``revoke``, ``pause`` and ``resume`` are persisted before the broadcast, so they hold for
workers that are down or start later.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

from ..clock import utcnow
from ..contract import Broker, ResultBackend
from ..errors import StemError
from ..settings import CONTROL_TIMEOUT_SECONDS
from ..signing import require_signer
from .liveness import live_worker_ids
from .pause import pause_queues, resume_queues
from .protocol import Command, Reply, control_channel, new_request_id, normalize_arguments, reply_queue_name
from .revoke import revoke_tasks

log = logging.getLogger("stem.control")

# Replies are small; fetch several per round trip.
REPLY_PREFETCH = 32


@dataclass(frozen=True, slots=True)
class ControlResult:
    """The outcome of one command: who was asked, who answered (and what), who did not."""

    command: str
    targeted: list[str]
    replies: dict[str, dict[str, Any]]
    missing: list[str]

    @property
    def ok(self) -> bool:
        """Every targeted worker answered (and, with nobody targeted, someone did)."""
        return not self.missing and bool(self.replies or self.targeted)

    @property
    def errors(self) -> dict[str, str]:
        """Workers that answered with an error, and the error."""
        return {w: r["error"] for w, r in self.replies.items() if isinstance(r.get("error"), str)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "targeted": list(self.targeted),
            "replies": {w: dict(r) for w, r in self.replies.items()},
            "missing": list(self.missing),
            "ok": self.ok,
        }


class ControlClient:
    """Sends control commands over ``broker`` and reads worker liveness from ``backend``."""

    def __init__(
        self, broker: Broker, backend: ResultBackend, *, by: str | None = None, stale_after: float | None = None
    ) -> None:
        self.broker = broker
        self.backend = backend
        self.by = by
        self.stale_after = stale_after

    async def send(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        targets: list[str] | None = None,
        timeout: float = CONTROL_TIMEOUT_SECONDS,
    ) -> ControlResult:
        """Broadcast ``command`` and collect replies until all targeted workers answered or
        ``timeout`` seconds passed."""
        args = normalize_arguments(command, arguments)
        # The broker signs the command; a verify-only process would send one every worker ignores.
        require_signer(f"the {command} command")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        if targets is not None:
            if isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets):
                raise ValueError("targets must be a list of worker ids")
            targets = sorted(set(targets))
        if args.get("by") is None and self.by is not None and command in ("revoke", "pause", "resume"):
            args["by"] = self.by
        await self._persist(command, args, targets)
        now = utcnow()
        targeted = targets if targets else live_worker_ids(await self.backend.list_heartbeats(), now, self.stale_after)
        request_id = new_request_id()
        reply_to = reply_queue_name(request_id)
        envelope = Command(
            command=command,
            arguments=args,
            request_id=request_id,
            reply_to=reply_to,
            targets=targets or None,
            sent_at=now,
            deadline=now + timedelta(seconds=timeout),
        ).to_envelope()
        try:
            await self.broker.broadcast(control_channel(self.broker.namespace), envelope)
            replies = await self._collect(reply_to, request_id, set(targeted), timeout)
        finally:
            await self._cleanup(reply_to)
        missing = [w for w in targeted if w not in replies]
        return ControlResult(command=command, targeted=list(targeted), replies=replies, missing=missing)

    async def _persist(self, command: str, args: dict[str, Any], targets: list[str] | None) -> None:
        if command == "revoke":
            await revoke_tasks(self.backend, args["task_ids"], terminate=args["terminate"], reason=args["reason"], by=args["by"])
        elif command == "pause":
            await pause_queues(self.backend, args["queues"], reason=args["reason"], by=args["by"], until=args["until"], workers=targets)
        elif command == "resume":
            await resume_queues(self.backend, args["queues"], by=args["by"])

    async def _collect(self, reply_to: str, request_id: str, expected: set[str], timeout: float) -> dict[str, dict[str, Any]]:
        replies: dict[str, dict[str, Any]] = {}
        stream = self.broker.consume([reply_to], prefetch=REPLY_PREFETCH, consumer=f"stem-control-{request_id[:12]}")
        try:
            async with asyncio.timeout(timeout):
                async for delivery in stream:
                    await self.broker.ack(delivery)
                    try:
                        reply = Reply.from_envelope(delivery.envelope)
                    except ValueError:
                        log.warning("ignoring a malformed message on reply queue %s", reply_to)
                        continue
                    if reply.request_id != request_id:
                        continue
                    replies[reply.worker_id] = reply.payload()
                    if expected and expected <= replies.keys():
                        break
        except TimeoutError:
            pass
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return replies

    async def _cleanup(self, reply_to: str) -> None:
        # Late replies (a worker answering after the timeout) must not linger as a queue.
        try:
            await self.broker.purge(reply_to)
        except StemError as exc:
            log.warning("could not purge reply queue %s: %s", reply_to, exc)


__all__ = ["ControlClient", "ControlResult", "REPLY_PREFETCH"]
