"""``Actions``: the repairs of ``Ops``: requeue, replay, purge, remove. Every action takes
``dry_run`` and returns an ``ActionResult`` (count and a sample); every real run appends
one audit record, failed runs included (``AuditTrail.run``).

Bulk targets are computed at the moment of acting, never taken from an older preview:
``requeue(stuck_leases=True, ids=previewed)`` requeues only the previewed leases that are
*still* stuck, so a refresh between "preview" and "do it" can shrink the set but never
widen it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from ..clock import to_iso
from ..contract import Broker, MessageInfo
from ..settings import DEFAULT_PAGE_LIMIT
from .audit import AuditTrail
from .directory import SAMPLE_SIZE, Directory
from .explain import EXPLAIN_PAGE, scan_pages
from .inspect import Inspector
from .models import ActionDetail, ActionResult


def id_set(ids: Iterable[str] | str | None) -> set[str] | None:
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


class Actions:
    """Repairs through the broker contract, each audited by ``audit``; stuck leases are
    the ones ``inspector`` flags."""

    def __init__(self, broker: Broker, directory: Directory, inspector: Inspector, audit: AuditTrail) -> None:
        self.broker = broker
        self.directory = directory
        self.inspector = inspector
        self.audit = audit

    # -- locating messages by id (bounded) ---------------------------------------------

    async def _locate_ids(self, queue: str, ids: set[str], states: Sequence[str]) -> dict[str, MessageInfo]:
        """The messages of ``ids`` found in ``states`` of ``queue`` (bounded like ``explain``;
        stops reading as soon as every id is found)."""
        self.directory.require_peek("look messages up by id")
        found: dict[str, MessageInfo] = {}
        for state in states:
            async for _, page in scan_pages(self.broker, queue, state):
                for info in page:
                    if info.envelope.id in ids:
                        found.setdefault(info.envelope.id, info)
                if len(found) == len(ids):
                    return found
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
        wanted = id_set(ids)
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
        await self.directory.require_queue(queue)
        arguments = {"queue": queue, "ids": sorted(wanted) if wanted else None, "stuck_leases": stuck_leases,
                     "limit": limit}

        async def work() -> ActionResult:
            if stuck_leases:
                leases = [lease for lease in await self.inspector.leases(queue)
                          if lease.stuck and (wanted is None or lease.id in wanted)]
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
            return ActionResult("requeue", dry_run, count, sample, arguments, ActionDetail(ids=targets))

        return await self.audit.run("requeue", arguments, reason, dry_run, work)

    async def replay(
        self, queue: str, *, ids: Iterable[str] | None = None, task: str | None = None, since: datetime | None = None,
        limit: int = DEFAULT_PAGE_LIMIT, delay: float | timedelta | None = None, dry_run: bool = False,
        reason: str | None = None, action: str = "replay",
    ) -> ActionResult:
        """Put up to ``limit`` dead letters (oldest first; by id, task name, dead since) back."""
        self.directory.require_dead_letters()
        _check_limit(limit)
        wanted = id_set(ids)
        await self.directory.require_queue(queue)
        arguments = {"queue": queue, "ids": sorted(wanted) if wanted else None, "task": task,
                     "since": to_iso(since) if since else None, "limit": limit,
                     "delay": delay.total_seconds() if isinstance(delay, timedelta) else delay}

        async def work() -> ActionResult:
            result = await self.broker.replay_dead_letters(queue, limit=limit, since=since, delay=delay, dry_run=dry_run,
                                                           ids=wanted, task=task)
            sample = [{"id": e.envelope.id, "name": e.envelope.name, "reason": e.reason, "dead_at": e.dead_at}
                      for e in result.entries[:SAMPLE_SIZE]]
            return ActionResult(action, dry_run, result.count, sample, arguments,
                                ActionDetail(ids=[e.envelope.id for e in result.entries]))

        return await self.audit.run(action, arguments, reason, dry_run, work)

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
            self.directory.require_dead_letters()
        await self.directory.require_queue(queue)
        action = "purge-dead" if dead else "purge"
        arguments = {"queue": queue, "dead": dead, "since": to_iso(since) if since else None, "limit": limit}

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
            detail = ActionDetail() if dead else ActionDetail(inflight_kept=stats.inflight)
            return ActionResult(action, dry_run, count, sample, arguments, detail)

        return await self.audit.run(action, arguments, reason, dry_run, work)

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
        wanted = id_set(ids)
        if not wanted:
            raise ValueError("remove needs at least one task id")
        await self.directory.require_queue(queue)
        arguments = {"queue": queue, "ids": sorted(wanted)}

        async def work() -> ActionResult:
            if dry_run:
                found = await self._locate_ids(queue, wanted, ("inflight", "delayed", "pending"))
                return ActionResult("remove", True, len(found), [_brief(found[i]) for i in sorted(found)[:SAMPLE_SIZE]],
                                    arguments, ActionDetail(ids=sorted(found)))
            count = await self.broker.remove(queue, wanted)
            return ActionResult("remove", False, count, [{"id": i} for i in sorted(wanted)[:SAMPLE_SIZE]], arguments,
                                ActionDetail(ids=sorted(wanted)))

        return await self.audit.run("remove", arguments, reason, dry_run, work)


__all__ = ["Actions", "SAMPLE_SIZE", "id_set"]
