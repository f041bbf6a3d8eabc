"""``Dispatcher``: the sends of ``Ops``: pause and resume queues, control commands and raw
broadcasts to workers, and enqueue. Each takes ``dry_run`` and is audited like the
repairs in ``actions.py``; enqueue goes through ``Stem.build_envelope``/``enqueue_envelopes``,
the one place enqueue logic lives.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from ..contract import Broker, ResultBackend
from ..control import ControlClient, ControlResult
from ..control.pause import pause_queues, queue_list, resume_queues
from ..control.protocol import normalize_arguments, until_iso
from ..envelope import Envelope, validate_name
from ..errors import Unsupported
from ..settings import CONTROL_TIMEOUT_SECONDS
from ..signing import require_signer
from .audit import AuditTrail, scrub
from .directory import SAMPLE_SIZE, Directory
from .models import ActionDetail, ActionResult

if TYPE_CHECKING:
    from ..app import Stem

# enqueue_many publishes in batches of this many (one publish_many each) and reports
# progress after each.
ENQUEUE_BATCH = 500
ProgressFn = Callable[[int, int], None]
PERSISTED_NOTE = "persisted; workers apply it at their next heartbeat"


def control_detail(result: ControlResult) -> ActionDetail:
    """A control command's outcome as an action's detail."""
    return ActionDetail(command=result.command, targeted=list(result.targeted),
                        replies={w: dict(r) for w, r in result.replies.items()}, missing=list(result.missing),
                        ok=result.ok, replies_from=sorted(result.replies))


class Dispatcher:
    """Sends through the broker contract and the control plane as ``actor``, each audited
    by ``audit``; "live" workers are the ones ``directory`` counts."""

    def __init__(self, broker: Broker, backend: ResultBackend, directory: Directory, audit: AuditTrail, *,
                 actor: str) -> None:
        self.broker = broker
        self.backend = backend
        self.directory = directory
        self.audit = audit
        self.actor = actor
        self._app: Stem | None = None

    def _client(self) -> ControlClient:
        """Targets the workers ``directory.live_ids`` counts as live (the same rule)."""
        return ControlClient(self.broker, self.backend, by=self.actor, stale_after=self.directory.stale_after)

    async def pause(
        self, queues: Iterable[str] | str, *, reason: str | None = None, until: datetime | str | float | None = None,
        timeout: float = CONTROL_TIMEOUT_SECONDS, dry_run: bool = False,
    ) -> ActionResult:
        """Pause ``queues`` for every worker: persisted (a restarted worker stays paused), then
        told to the live workers. ``until`` (time or seconds from now) ends it by itself."""
        names = queue_list(queues)
        expires = until_iso(until)
        arguments = {"queues": names, "reason": reason, "until": expires}

        async def work() -> ActionResult:
            live = await self.directory.live_ids()
            sample = [{"queue": q, "reason": reason, "until": expires} for q in names[:SAMPLE_SIZE]]
            if dry_run:
                return ActionResult("pause", True, len(names), sample, arguments, ActionDetail(workers=live))
            detail = await self._tell("pause", {"queues": names, "reason": reason, "until": expires}, live, timeout)
            if detail is None:
                await pause_queues(self.backend, names, reason=reason, by=self.actor, until=expires)
                detail = ActionDetail(workers=live, note=PERSISTED_NOTE)
            return ActionResult("pause", False, len(names), sample, arguments, detail, ok=not detail.missing)

        return await self.audit.run("pause", arguments, reason, dry_run, work)

    async def resume(self, queues: Iterable[str] | str, *, timeout: float = CONTROL_TIMEOUT_SECONDS,
                     dry_run: bool = False, reason: str | None = None) -> ActionResult:
        """Lift the pause of ``queues``; ``count`` is how many were paused."""
        names = queue_list(queues)
        arguments = {"queues": names}

        async def work() -> ActionResult:
            paused = await self.directory.pauses()
            were = [q for q in names if q in paused]
            live = await self.directory.live_ids()
            sample = [{"queue": q, "paused_by": paused[q].get("by"), "reason": paused[q].get("reason")} for q in were]
            if dry_run:
                return ActionResult("resume", True, len(were), sample[:SAMPLE_SIZE], arguments, ActionDetail(workers=live))
            detail = await self._tell("resume", {"queues": names}, live, timeout)
            if detail is None:
                await resume_queues(self.backend, names, by=self.actor)
                detail = ActionDetail(workers=live, note=PERSISTED_NOTE)
            return ActionResult("resume", False, len(were), sample[:SAMPLE_SIZE], arguments, detail,
                                ok=not detail.missing)

        return await self.audit.run("resume", arguments, reason, dry_run, work)

    async def _tell(self, command: str, arguments: dict[str, Any], live: list[str], timeout: float) -> ActionDetail | None:
        """Send ``command`` to the live workers (which also persists it); None when there is
        nobody to tell or no broadcast to tell them with (the caller persists instead)."""
        if not live or not self.broker.capabilities.broadcast:
            return None
        return control_detail(await self._client().send(command, arguments, timeout=timeout))

    async def broadcast(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, targets: list[str] | None = None,
        timeout: float = CONTROL_TIMEOUT_SECONDS, dry_run: bool = False, reason: str | None = None,
    ) -> ActionResult:
        """Send a control command; ``count`` is how many workers answered, ``ok`` False when a
        targeted worker did not answer or answered with an error."""
        if command in ("pause", "resume"):
            args = normalize_arguments(command, arguments)
            if command == "pause":
                return await self.pause(args["queues"], reason=args.get("reason") or reason, until=args.get("until"),
                                        timeout=timeout, dry_run=dry_run)
            return await self.resume(args["queues"], timeout=timeout, dry_run=dry_run, reason=reason)
        args = normalize_arguments(command, arguments)
        if not self.broker.capabilities.broadcast:
            raise Unsupported(f"the {self.broker.scheme} broker has no broadcast, so control commands cannot reach workers")
        arguments_out = {"command": command, "arguments": args, "targets": targets, "timeout": timeout}

        async def work() -> ActionResult:
            if dry_run:
                who = sorted(targets) if targets else await self.directory.live_ids()
                return ActionResult("broadcast", True, len(who), [{"worker_id": w} for w in who[:SAMPLE_SIZE]],
                                    arguments_out, ActionDetail(targeted=who))
            result = await self._client().send(command, args, targets=targets, timeout=timeout)
            sample = [{"worker_id": w, **reply} for w, reply in list(result.replies.items())[:SAMPLE_SIZE]]
            return ActionResult("broadcast", False, len(result.replies), sample, arguments_out, control_detail(result),
                                ok=result.ok and not result.errors)

        return await self.audit.run("broadcast", arguments_out, reason, dry_run, work)

    async def broadcast_raw(self, channel: str, task: str, args: Mapping[str, Any] | None = None, *,
                            dry_run: bool = False, reason: str | None = None) -> ActionResult:
        """Publish one envelope to every subscriber of ``channel``."""
        validate_name(channel, kind="channel")
        require_signer("the broadcast")  # the broker signs it; a verify-only process cannot
        envelope = Envelope(name=task, args=dict(args or {}))
        envelope.to_json()  # InvalidEnvelope when the args are not JSON
        if not self.broker.capabilities.broadcast:
            raise Unsupported(f"the {self.broker.scheme} broker has no broadcast channels")
        arguments = {"channel": channel, "task": task, "args": envelope.args}

        async def work() -> ActionResult:
            if not dry_run:
                await self.broker.broadcast(channel, envelope)
            sample = [{"id": envelope.id, "name": task, "channel": channel}]
            return ActionResult("broadcast-raw", dry_run, 1, sample, arguments, ActionDetail(ids=[envelope.id]))

        return await self.audit.run("broadcast-raw", arguments, reason, dry_run, work)

    # -- enqueue ----------------------------------------------------------------------

    def app(self) -> Stem:
        """One ``Stem`` over the connected adapters: the only place enqueue logic lives."""
        if self._app is None:
            from ..app import Stem  # on first use: the app pulls in the worker package, which reads never need

            self._app = Stem(broker=self.broker, backend=self.backend)
        return self._app

    async def enqueue(
        self, name: str, args: Mapping[str, Any] | None = None, *, queue: str | None = None, priority: int | None = None,
        delay: float | timedelta | None = None, eta: datetime | None = None, task_id: str | None = None,
        max_retries: int | None = None, dry_run: bool = False, reason: str | None = None,
    ) -> ActionResult:
        """``Stem.enqueue`` (a dry run validates and builds the envelope, publishes nothing)."""
        options = {"queue": queue, "priority": priority, "delay": delay, "eta": eta, "task_id": task_id,
                   "max_retries": max_retries}
        envelope = self.app().build_envelope(name, args, **options)
        arguments = scrub({"task": name, "args": dict(args or {}), **{k: v for k, v in options.items() if v is not None}})

        async def work() -> ActionResult:
            if dry_run:
                return ActionResult("enqueue", True, 1, [envelope.to_dict()], arguments)
            [task] = await self.app().enqueue_envelopes([envelope])
            sample = [{"id": task, "name": name, "queue": envelope.queue}]
            return ActionResult("enqueue", False, 1, sample, arguments, ActionDetail(ids=[task]))

        return await self.audit.run("enqueue", arguments, reason, dry_run, work)

    async def enqueue_many(
        self, items: Sequence[tuple[Any, ...]], *, batch_size: int = ENQUEUE_BATCH, on_progress: ProgressFn | None = None,
        dry_run: bool = False, reason: str | None = None,
    ) -> ActionResult:
        """``Stem.enqueue_many`` in batches; every item is validated before anything is sent."""
        items = list(items)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        app = self.app()
        envelopes = []
        for index, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise ValueError(f"item {index + 1}: expected (name, args) or (name, args, options)")
            try:
                envelopes.append(app.build_envelope(item[0], item[1], **(item[2] if len(item) == 3 else {})))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"item {index + 1}: {exc}") from None
        names: dict[str, int] = {}
        for env in envelopes:
            names[env.name] = names.get(env.name, 0) + 1
        arguments = {"count": len(items), "tasks": names}

        async def work() -> ActionResult:
            if dry_run:
                return ActionResult("enqueue", True, len(envelopes), [e.to_dict() for e in envelopes[:SAMPLE_SIZE]],
                                    arguments)
            ids: list[str] = []
            for start in range(0, len(envelopes), batch_size):
                ids += await app.enqueue_envelopes(envelopes[start:start + batch_size])
                if on_progress is not None:
                    on_progress(len(ids), len(items))
            sample = [{"id": i, "name": e.name, "queue": e.queue} for i, e in zip(ids[:SAMPLE_SIZE], envelopes)]
            return ActionResult("enqueue", False, len(ids), sample, arguments, ActionDetail(ids=ids))

        return await self.audit.run("enqueue", arguments, reason, dry_run, work)


__all__ = ["Dispatcher", "ENQUEUE_BATCH", "control_detail"]
