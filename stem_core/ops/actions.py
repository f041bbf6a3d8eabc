"""The write half of ``Ops``: every action takes ``dry_run`` and returns an ``ActionResult``
(count and a sample); every real run appends one audit record, failed runs included.

Bulk targets are computed at the moment of acting, never taken from an older preview:
``requeue(stuck_leases=True, ids=previewed)`` requeues only the previewed leases that are
*still* stuck, so a refresh between "preview" and "do it" can shrink the set but never
widen it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from ..contract import MessageInfo
from ..control import ControlClient
from ..control.pause import pause_queues, resume_queues
from ..control.protocol import normalize_arguments, until_iso
from ..envelope import Envelope, validate_name
from ..errors import StemError, Unsupported
from ..settings import CONTROL_TIMEOUT_SECONDS, DEFAULT_PAGE_LIMIT
from .audit import audit_record
from .base import LEASES_LIMIT, SAMPLE_SIZE, log
from .explain import EXPLAIN_PAGE, EXPLAIN_SCAN_LIMIT, ExplainMixin
from .models import ActionResult

# enqueue_many publishes in batches of this many (one publish_many each) and reports
# progress after each.
ENQUEUE_BATCH = 500
ProgressFn = Callable[[int, int], None]


def _id_set(ids: Iterable[str] | str | None) -> set[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str):
        ids = [ids]
    out = set()
    for value in ids:
        if not isinstance(value, str) or not value:
            raise ValueError(f"task ids must be non-empty strings, got {value!r}")
        out.add(value)
    return out or None


def _brief(info: MessageInfo) -> dict[str, Any]:
    env = info.envelope
    return {"id": env.id, "name": env.name, "queue": env.queue, "state": info.state, "holder": info.lease_holder}


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")


class ActionMixin(ExplainMixin):
    """Mixed into ``Ops``."""

    # -- the audit wrapper ------------------------------------------------------------

    async def _act(
        self, action: str, arguments: dict[str, Any], reason: str | None, dry_run: bool,
        work: Callable[[], Awaitable[ActionResult]],
    ) -> ActionResult:
        if dry_run:
            return await work()
        try:
            result = await work()
        except Exception as exc:  # audited, then raised unchanged
            await self._audit(action, arguments, None, f"{type(exc).__name__}: {exc}", reason)
            raise
        # The audit keeps ids (bounded by audit.scrub), not the sample's payloads.
        summary: dict[str, Any] = {"count": result.count, "ok": result.ok}
        summary.update({k: v for k, v in result.detail.items() if k in ("ids", "missing", "replies_from", "errors")})
        if "ids" not in summary:
            summary["sample"] = [s.get("id") or s.get("queue") or s.get("worker_id") for s in result.sample]
        audit_id, problem = await self._audit(action, arguments, summary, None, reason)
        detail = dict(result.detail)
        if problem is not None:
            detail["audit_error"] = problem
        return dataclasses.replace(result, audit_id=audit_id, detail=detail)

    async def _audit(self, action: str, arguments: dict[str, Any], result: dict[str, Any] | None,
                     error: str | None, reason: str | None) -> tuple[str | None, str | None]:
        record = audit_record(action=action, actor=self.actor, namespace=self.namespace, broker=self.broker.scheme,
                              arguments=arguments, result=result, error=error, reason=reason)
        try:
            await self.backend.append_audit(record)
        except (StemError, ValueError) as exc:
            # The action already happened: report the lost record instead of failing it.
            log.warning("could not append the audit record of %s: %s", action, exc)
            return None, f"audit record not written: {exc}"
        return record["id"], None

    # -- locating messages by id (bounded) ---------------------------------------------

    async def _locate_ids(self, queue: str, ids: set[str], states: Sequence[str]) -> dict[str, MessageInfo]:
        self._require_peek("look messages up by id")
        found: dict[str, MessageInfo] = {}
        for state in states:
            if state == "inflight":
                pages = [await self.broker.peek(queue, state=state, limit=LEASES_LIMIT)]
            else:
                pages = []
                offset = 0
                while offset < EXPLAIN_SCAN_LIMIT and len(found) < len(ids):
                    page = await self.broker.peek(queue, state=state, limit=EXPLAIN_PAGE, offset=offset)
                    pages.append(page)
                    if len(page) < EXPLAIN_PAGE:
                        break
                    offset += EXPLAIN_PAGE
            for page in pages:
                for info in page:
                    if info.envelope.id in ids and info.envelope.id not in found:
                        found[info.envelope.id] = info
        return found

    # -- requeue / replay / purge / remove ----------------------------------------------

    async def requeue(
        self, queue: str, *, ids: Iterable[str] | None = None, stuck_leases: bool = False, dead: bool = False,
        task: str | None = None, since: datetime | None = None, limit: int | None = None,
        delay: float | timedelta | None = None, dry_run: bool = False, reason: str | None = None,
    ) -> ActionResult:
        """Make messages ready now: by id (leased or delayed ones), the leases flagged stuck
        (``stuck_leases``; only among ``ids`` when both are given), or dead letters (``dead``,
        filtered by ``task``/``since``, see ``replay``)."""
        wanted = _id_set(ids)
        _check_limit(limit)
        if dead:
            if stuck_leases:
                raise ValueError("requeue dead letters or stuck leases, not both at once")
            return await self.replay(queue, ids=wanted, task=task, since=since, limit=limit or DEFAULT_PAGE_LIMIT,
                                     delay=delay, dry_run=dry_run, reason=reason, action="requeue")
        if task is not None or since is not None:
            raise ValueError("task and since filter dead letters: add dead=True (--dead)")
        if delay is not None:
            raise ValueError("delay applies to dead letters (--dead); leased and delayed messages become ready now")
        if not stuck_leases and not wanted:
            raise ValueError("say what to requeue: ids (--id), stuck leases (--expired-leases) or dead letters (--dead)")
        await self.require_queue(queue)
        arguments = {"queue": queue, "ids": sorted(wanted) if wanted else None, "stuck_leases": stuck_leases,
                     "limit": limit}

        async def work() -> ActionResult:
            if stuck_leases:
                leases = [lease for lease in await self.leases(queue) if lease.stuck and (wanted is None or lease.id in wanted)]
                leases = leases[:limit] if limit is not None else leases
                targets = [lease.id for lease in leases]
                sample = [lease.to_dict() for lease in leases[:SAMPLE_SIZE]]
            elif dry_run:
                found = await self._locate_ids(queue, wanted or set(), ("inflight", "delayed"))
                targets = sorted(found)[:limit] if limit is not None else sorted(found)
                sample = [_brief(found[i]) for i in targets[:SAMPLE_SIZE]]
            else:
                targets = sorted(wanted or ())[:limit] if limit is not None else sorted(wanted or ())
                sample = [{"id": i} for i in targets[:SAMPLE_SIZE]]
            count = len(targets) if dry_run else (await self.broker.requeue(queue, targets) if targets else 0)
            return ActionResult("requeue", dry_run, count, sample, arguments, {"ids": targets})

        return await self._act("requeue", arguments, reason, dry_run, work)

    async def replay(
        self, queue: str, *, ids: Iterable[str] | None = None, task: str | None = None, since: datetime | None = None,
        limit: int = DEFAULT_PAGE_LIMIT, delay: float | timedelta | None = None, dry_run: bool = False,
        reason: str | None = None, action: str = "replay",
    ) -> ActionResult:
        """Put up to ``limit`` dead letters (oldest first; by id, task name, dead since) back."""
        self._require_dead_letters()
        _check_limit(limit)
        wanted = _id_set(ids)
        await self.require_queue(queue)
        arguments = {"queue": queue, "ids": sorted(wanted) if wanted else None, "task": task,
                     "since": since.isoformat() if since else None, "limit": limit,
                     "delay": delay.total_seconds() if isinstance(delay, timedelta) else delay}

        async def work() -> ActionResult:
            result = await self.broker.replay_dead_letters(queue, limit=limit, since=since, delay=delay, dry_run=dry_run,
                                                           ids=wanted, task=task)
            sample = [{"id": e.envelope.id, "name": e.envelope.name, "reason": e.reason, "dead_at": e.dead_at}
                      for e in result.entries[:SAMPLE_SIZE]]
            return ActionResult(action, dry_run, result.count, sample, arguments,
                                {"ids": [e.envelope.id for e in result.entries]})

        return await self._act(action, arguments, reason, dry_run, work)

    async def purge(
        self, queue: str, *, dead: bool = False, since: datetime | None = None, limit: int | None = None,
        dry_run: bool = False, reason: str | None = None,
    ) -> ActionResult:
        """Delete every pending and delayed message (in-flight ones are left alone), or with
        ``dead`` the dead letters (``since``, oldest first up to ``limit``)."""
        _check_limit(limit)
        if not dead and (since is not None or limit is not None):
            raise ValueError("since and limit apply to dead letters (--dead)")
        if dead:
            self._require_dead_letters()
        await self.require_queue(queue)
        action = "purge-dead" if dead else "purge"
        arguments = {"queue": queue, "dead": dead, "since": since.isoformat() if since else None, "limit": limit}

        async def work() -> ActionResult:
            stats = (await self.broker.queue_stats([queue]))[0]
            if dead:
                page = await self.broker.list_dead_letters(queue, SAMPLE_SIZE)
                sample = [{"id": e.envelope.id, "name": e.envelope.name, "reason": e.reason, "dead_at": e.dead_at}
                          for e in page.entries if since is None or e.dead_at >= since]
                if dry_run:
                    count = stats.dead if since is None else await self._count_dead_since(queue, since)
                    count = min(count, limit) if limit is not None else count
                else:
                    count = await self.broker.purge_dead_letters(queue, since=since, limit=limit)
            else:
                sample = []
                if self.broker.capabilities.peek:
                    sample = [_brief(i) for i in await self.broker.peek(queue, state="pending", limit=SAMPLE_SIZE)]
                count = stats.pending + stats.delayed if dry_run else await self.broker.purge(queue)
            return ActionResult(action, dry_run, count, sample, arguments, {"inflight_kept": stats.inflight} if not dead else {})

        return await self._act(action, arguments, reason, dry_run, work)

    async def _count_dead_since(self, queue: str, since: datetime) -> int:
        """Dead letters newer than ``since`` (pages are newest first: stop at the first older one)."""
        total, offset = 0, 0
        while True:
            page = await self.broker.list_dead_letters(queue, EXPLAIN_PAGE, offset)
            newer = [e for e in page.entries if e.dead_at >= since]
            total += len(newer)
            if len(newer) < len(page.entries) or page.next_offset is None:
                return total
            offset = page.next_offset

    async def remove(self, queue: str, ids: Iterable[str], *, dry_run: bool = False, reason: str | None = None) -> ActionResult:
        """Delete messages by id in any live state (pending, delayed or in flight)."""
        wanted = _id_set(ids)
        if not wanted:
            raise ValueError("remove needs at least one task id")
        await self.require_queue(queue)
        arguments = {"queue": queue, "ids": sorted(wanted)}

        async def work() -> ActionResult:
            if dry_run:
                found = await self._locate_ids(queue, wanted, ("inflight", "delayed", "pending"))
                return ActionResult("remove", True, len(found), [_brief(found[i]) for i in sorted(found)[:SAMPLE_SIZE]],
                                    arguments, {"ids": sorted(found)})
            count = await self.broker.remove(queue, wanted)
            return ActionResult("remove", False, count, [{"id": i} for i in sorted(wanted)[:SAMPLE_SIZE]], arguments,
                                {"ids": sorted(wanted)})

        return await self._act("remove", arguments, reason, dry_run, work)

    # -- pause / resume / broadcast ------------------------------------------------------

    async def _live_ids(self) -> list[str]:
        now = self._now()
        return sorted(w for w, hb in (await self._heartbeats()).items() if self._alive(hb, now))

    async def pause(
        self, queues: Iterable[str] | str, *, reason: str | None = None, until: datetime | str | float | None = None,
        timeout: float = CONTROL_TIMEOUT_SECONDS, dry_run: bool = False,
    ) -> ActionResult:
        """Pause ``queues`` for every worker: persisted (a restarted worker stays paused), then
        told to the live workers. ``until`` (time or seconds from now) ends it by itself."""
        names = _queue_list(queues)
        expires = until_iso(until)
        arguments = {"queues": names, "reason": reason, "until": expires}

        async def work() -> ActionResult:
            live = await self._live_ids()
            sample = [{"queue": q, "reason": reason, "until": expires} for q in names[:SAMPLE_SIZE]]
            if dry_run:
                return ActionResult("pause", True, len(names), sample, arguments, {"workers": live})
            detail = await self._tell("pause", {"queues": names, "reason": reason, "until": expires}, live, timeout)
            if detail is None:
                await pause_queues(self.backend, names, reason=reason, by=self.actor, until=expires)
                detail = {"workers": live, "note": "persisted; workers apply it at their next heartbeat"}
            return ActionResult("pause", False, len(names), sample, arguments, detail, ok=not detail.get("missing"))

        return await self._act("pause", arguments, reason, dry_run, work)

    async def resume(self, queues: Iterable[str] | str, *, timeout: float = CONTROL_TIMEOUT_SECONDS,
                     dry_run: bool = False, reason: str | None = None) -> ActionResult:
        """Lift the pause of ``queues``; ``count`` is how many were paused."""
        names = _queue_list(queues)
        arguments = {"queues": names}

        async def work() -> ActionResult:
            paused = await self._pauses()
            were = [q for q in names if q in paused]
            live = await self._live_ids()
            sample = [{"queue": q, "paused_by": paused[q].get("by"), "reason": paused[q].get("reason")} for q in were]
            if dry_run:
                return ActionResult("resume", True, len(were), sample[:SAMPLE_SIZE], arguments, {"workers": live})
            detail = await self._tell("resume", {"queues": names}, live, timeout)
            if detail is None:
                await resume_queues(self.backend, names, by=self.actor)
                detail = {"workers": live, "note": "persisted; workers apply it at their next heartbeat"}
            return ActionResult("resume", False, len(were), sample[:SAMPLE_SIZE], arguments, detail,
                                ok=not detail.get("missing"))

        return await self._act("resume", arguments, reason, dry_run, work)

    async def _tell(self, command: str, arguments: dict[str, Any], live: list[str], timeout: float) -> dict[str, Any] | None:
        """Send ``command`` to the live workers (which also persists it); None when there is
        nobody to tell or no broadcast to tell them with (the caller persists instead)."""
        if not live or not self.broker.capabilities.broadcast:
            return None
        result = await ControlClient(self.broker, self.backend, by=self.actor).send(command, arguments, timeout=timeout)
        detail = result.to_dict()
        detail["replies_from"] = sorted(result.replies)
        return detail

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
                who = sorted(targets) if targets else sorted(await self._heartbeats())
                return ActionResult("broadcast", True, len(who), [{"worker_id": w} for w in who[:SAMPLE_SIZE]],
                                    arguments_out, {"targeted": who})
            result = await ControlClient(self.broker, self.backend, by=self.actor).send(
                command, args, targets=targets, timeout=timeout)
            sample = [{"worker_id": w, **reply} for w, reply in list(result.replies.items())[:SAMPLE_SIZE]]
            detail = result.to_dict()
            detail["replies_from"] = sorted(result.replies)
            return ActionResult("broadcast", False, len(result.replies), sample, arguments_out, detail,
                                ok=result.ok and not result.errors)

        return await self._act("broadcast", arguments_out, reason, dry_run, work)

    async def broadcast_raw(self, channel: str, task: str, args: Mapping[str, Any] | None = None, *,
                            dry_run: bool = False, reason: str | None = None) -> ActionResult:
        """Publish one envelope to every subscriber of ``channel``."""
        validate_name(channel, kind="channel")
        envelope = Envelope(name=task, args=dict(args or {}))
        envelope.to_json()  # InvalidEnvelope when the args are not JSON
        if not self.broker.capabilities.broadcast:
            raise Unsupported(f"the {self.broker.scheme} broker has no broadcast channels")
        arguments = {"channel": channel, "task": task, "args": envelope.args}

        async def work() -> ActionResult:
            if not dry_run:
                await self.broker.broadcast(channel, envelope)
            sample = [{"id": envelope.id, "name": task, "channel": channel}]
            return ActionResult("broadcast-raw", dry_run, 1, sample, arguments, {"ids": [envelope.id]})

        return await self._act("broadcast-raw", arguments, reason, dry_run, work)

    # -- enqueue ----------------------------------------------------------------------

    def _stem(self) -> Any:
        """One ``Stem`` over the connected adapters: the only place enqueue logic lives."""
        if self._app is None:
            from ..app import Stem

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
        envelope = self._stem().build_envelope(name, args, **options)
        arguments = {"task": name, "args": dict(args or {}), **{k: v for k, v in options.items() if v is not None}}

        async def work() -> ActionResult:
            if dry_run:
                return ActionResult("enqueue", True, 1, [envelope.to_dict()], arguments, {})
            task = await self._stem().enqueue(name, args, **options)
            sample = [{"id": task, "name": name, "queue": envelope.queue}]
            return ActionResult("enqueue", False, 1, sample, arguments, {"ids": [task]})

        return await self._act("enqueue", arguments, reason, dry_run, work)

    async def enqueue_many(
        self, items: Sequence[tuple[Any, ...]], *, batch_size: int = ENQUEUE_BATCH, on_progress: ProgressFn | None = None,
        dry_run: bool = False, reason: str | None = None,
    ) -> ActionResult:
        """``Stem.enqueue_many`` in batches; every item is validated before anything is sent."""
        items = list(items)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        app = self._stem()
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
                                    arguments, {})
            ids: list[str] = []
            for start in range(0, len(items), batch_size):
                ids += await app.enqueue_many(items[start:start + batch_size])
                if on_progress is not None:
                    on_progress(len(ids), len(items))
            sample = [{"id": i, "name": e.name, "queue": e.queue} for i, e in zip(ids[:SAMPLE_SIZE], envelopes)]
            return ActionResult("enqueue", False, len(ids), sample, arguments, {"ids": ids})

        return await self._act("enqueue", arguments, reason, dry_run, work)


def _queue_list(queues: Iterable[str] | str) -> list[str]:
    if isinstance(queues, str):
        queues = [queues]
    names = list(dict.fromkeys(validate_name(q) for q in queues))
    if not names:
        raise ValueError("name at least one queue")
    return names


__all__ = ["ActionMixin", "ENQUEUE_BATCH"]
