"""``Inspector``: the reads of ``Ops``: overview, workers, leases, queue pages, dead
letters.

``overview`` reads only counters, heartbeats and records, so its cost does not grow with
queue length (``bench/ops_overview.py`` measures it); the others read bounded pages.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Sequence

from ..contract import Broker, DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ResultBackend
from ..contract.broker import PEEK_STATES
from ..envelope import validate_name
from ..settings import DEFAULT_PAGE_LIMIT
from . import text
from .directory import LEASES_LIMIT, Directory, Heartbeats, Pauses, entry_state, entry_time, heartbeat_age, is_internal
from .history import RateHistory
from .models import LeaseInfo, Overview, QueueDetail, QueueOverview, WorkerInfo
from .rates import Sample
from .verdict import VerdictMemory, queue_verdict

DETAIL_STATES = (*PEEK_STATES, "dead")


class Inspector:
    """Reads over the contracts; rates come from ``history``, liveness from ``directory``."""

    def __init__(self, broker: Broker, backend: ResultBackend, directory: Directory, history: RateHistory) -> None:
        self.broker = broker
        self.backend = backend
        self.directory = directory
        self.history = history
        # The verdicts last shown by this Ops's overview, for hysteresis (verdict.py).
        self.verdicts = VerdictMemory()

    # -- overview -------------------------------------------------------------------

    async def overview(self, queues: Sequence[str] | None = None, *, sample_interval: float = 0.0) -> Overview:
        """Every queue (or ``queues``): counts, oldest age, rates, serving workers, verdict.

        When no earlier sample gives a rate window and ``sample_interval`` > 0, a second
        reading is taken that many seconds later (one-shot callers; see docs/ops.md).
        """
        names = [validate_name(q) for q in queues] if queues is not None else None
        await self.history.load()
        stats, heartbeats, pauses, current = await self._read(names)
        if sample_interval > 0 and any(self.history.tracker.baseline(current.at, s.queue) is None for s in stats):
            self.history.tracker.observe(current)
            await asyncio.sleep(sample_interval)
            stats, heartbeats, pauses, current = await self._read(names)
        orphans = [await self._orphaned(s, heartbeats, current.at) for s in stats]
        rows = [self._row(s, heartbeats, pauses, current, orphaned=o, settle=True) for s, o in zip(stats, orphans)]
        self.history.tracker.observe(current)
        await self.history.save(current.at)
        live = sum(1 for hb in heartbeats.values() if self.directory.alive(hb, current.at))
        return Overview(
            at=current.at,
            namespace=self.broker.namespace,
            broker=self.broker.scheme,
            backend=self.backend.scheme,
            capabilities=self.broker.capabilities.to_dict(),
            queues=rows,
            live_workers=live,
            rates_ready=any(r.net_rate is not None for r in rows),
        )

    async def _read(
        self, names: list[str] | None, heartbeats: Heartbeats | None = None, pauses: Pauses | None = None,
    ) -> tuple[list[QueueStats], Heartbeats, Pauses, Sample]:
        if heartbeats is None:
            heartbeats = await self.directory.heartbeats()
        if pauses is None:
            pauses = await self.directory.pauses()
        if names is None:
            names = await self.directory.known_queues(heartbeats, pauses)
        stats = await self.broker.queue_stats(names) if names else []
        now = self.directory.now()
        return stats, heartbeats, pauses, Sample.take(now, stats, heartbeats.values())

    async def _orphaned(self, s: QueueStats, heartbeats: Heartbeats, now: datetime) -> int | None:
        """How many of ``s.queue``'s leases are held by no live worker: a holder with no
        heartbeat, or one that stopped heartbeating (``Directory.alive``). Never a
        difference of counts read at different times: a lease taken since its holder's last
        heartbeat is held by a live worker and is not orphaned.

        The in-flight page (bounded by ``LEASES_LIMIT``, and by the workers' prefetch, never
        by the queue's length) is read only when the heartbeats leave room for a doubt: more
        leases than the live workers reported, or a worker of this queue that stopped
        heartbeating. A broker that cannot peek, or cannot count its in-flight messages
        (``s.inflight`` None: RabbitMQ without its management API), answers None (unknown),
        not a guess."""
        if s.inflight is None:
            return None
        if s.inflight == 0:
            return 0
        reported = 0
        doubt = False
        for hb in heartbeats.values():
            mine = sum(1 for e in hb.inflight if e.get("queue") == s.queue)
            if self.directory.alive(hb, now):
                reported += mine
            elif mine or s.queue in hb.queues:
                doubt = True
        if reported >= s.inflight and not doubt:
            return 0
        if not self.broker.capabilities.peek:
            return None
        infos = await self.broker.peek(s.queue, state="inflight", limit=LEASES_LIMIT)
        return sum(1 for info in infos
                   if not self.directory.alive(heartbeats.get(info.lease_holder or ""), now))

    def _row(self, s: QueueStats, heartbeats: Heartbeats, pauses: Pauses, current: Sample, *,
             orphaned: int | None = None, settle: bool = False) -> QueueOverview:
        now = current.at
        live = [hb for hb in heartbeats.values() if self.directory.alive(hb, now)]
        serving = [hb for hb in live if s.queue in hb.queues and s.queue not in hb.paused_queues]
        active = sum(1 for hb in serving for e in hb.inflight if e.get("queue") == s.queue and entry_state(e) == "active")
        record = pauses.get(s.queue)
        # A pause aimed at chosen workers leaves the queue served by the others.
        whole_pause = record if record is not None and not record.get("workers") else None
        rates = self.history.tracker.rates(s.queue, current)
        verdict = queue_verdict(
            pending=s.pending, delayed=s.delayed, inflight=s.inflight, oldest_age=s.oldest_pending_age,
            pause=whole_pause, serving=len(serving), rates=rates,
        )
        if settle:
            verdict = self.verdicts.settle(s.queue, verdict, pending=s.pending)
        return QueueOverview(
            queue=s.queue,
            pending=s.pending,
            delayed=s.delayed,
            inflight=s.inflight,
            dead=s.dead,
            oldest_pending_age=s.oldest_pending_age,
            in_rate=rates.in_rate if rates else None,
            out_rate=rates.out_rate if rates else None,
            net_rate=rates.net_rate if rates else None,
            rate_window=rates.span if rates else None,
            rate_source=rates.source if rates else None,
            workers=sorted(hb.worker_id for hb in serving),
            worker_slots=sum(hb.concurrency for hb in serving),
            active=active,
            unaccounted_leases=orphaned,
            paused=record is not None,
            paused_reason=record.get("reason") if record else None,
            paused_by=record.get("by") if record else None,
            paused_until=record.get("until") if record else None,
            verdict=verdict.code,
            verdict_text=verdict.text,
            eta_seconds=verdict.eta_seconds,
            approximate=s.approximate,
        )

    # -- workers --------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Every worker with a heartbeat, stale ones included (flagged)."""
        now = self.directory.now()
        out = []
        for hb in (await self.directory.heartbeats()).values():
            age = heartbeat_age(hb, now)
            states = [entry_state(e) for e in hb.inflight]
            out.append(
                WorkerInfo(
                    worker_id=hb.worker_id, host=hb.host, pid=hb.pid, queues=list(hb.queues),
                    concurrency=hb.concurrency, active=states.count("active"), reserved=states.count("reserved"),
                    processed=hb.processed, failed=hb.failed, retried=hb.retried,
                    paused_queues=list(hb.paused_queues), version=hb.version, heartbeat_at=hb.timestamp,
                    heartbeat_age=age, stale=age > self.directory.stale_window(hb),
                    inflight=[dict(e) for e in hb.inflight],
                )
            )
        return sorted(out, key=lambda w: w.worker_id)

    # -- leases ---------------------------------------------------------------------

    async def leases(self, queue: str | None = None, *, limit: int = LEASES_LIMIT) -> list[LeaseInfo]:
        """Every in-flight delivery (of ``queue``, or of every queue) with its holder's
        heartbeat; ``stuck`` when the lease expired or the holder is not alive."""
        self.directory.require_peek("list leases")
        heartbeats = await self.directory.heartbeats()
        if queue is not None:
            names = [await self.directory.require_queue(queue, heartbeats=heartbeats)]
        else:
            stats = await self.broker.queue_stats()
            names = [s.queue for s in stats if (s.inflight or 0) > 0 and not is_internal(s.queue)]
        out: list[LeaseInfo] = []
        for name in names:
            for info in await self.broker.peek(name, state="inflight", limit=limit):
                out.append(self.lease(name, info, heartbeats, self.directory.now()))
        return out

    def lease(self, queue: str, info: MessageInfo, heartbeats: Heartbeats, now: datetime) -> LeaseInfo:
        holder = info.lease_holder
        hb = heartbeats.get(holder) if holder else None
        hb_age = heartbeat_age(hb, now) if hb is not None else None
        entry = next((e for e in hb.inflight if e.get("id") == info.envelope.id), None) if hb is not None else None
        started = entry_time(entry, "started_at") if entry is not None else None
        expires_in = (info.lease_expires_at - now).total_seconds() if info.lease_expires_at is not None else None
        alive = self.directory.alive(hb, now)
        reason: str | None = None
        if expires_in is not None and expires_in <= 0:
            reason = f"lease expired {text.duration(-expires_in)} ago"
        elif holder and hb is None:
            reason = f"holder {holder} has no heartbeat (dead, or not a Stem worker)"
        elif holder and hb is not None and not alive and hb_age is not None:
            reason = (f"holder {holder} stopped heartbeating {text.duration(hb_age)} ago "
                      f"(live within {text.duration(self.directory.stale_window(hb))})")
        return LeaseInfo(
            queue=queue, id=info.envelope.id, name=info.envelope.name, holder=holder,
            state=entry_state(entry) if entry is not None else None,
            held_for=(now - started).total_seconds() if started is not None else None,
            lease_expires_at=info.lease_expires_at, expires_in=expires_in, heartbeat_age=hb_age,
            holder_alive=alive, delivery_count=info.delivery_count, attempt=info.envelope.attempt,
            stuck=reason is not None, stuck_reason=reason,
        )

    # -- one queue ------------------------------------------------------------------

    async def queue_detail(
        self, queue: str, state: str = "pending", limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0,
        cursor: str | None = None,
    ) -> QueueDetail:
        """One page of ``state`` (pending, delayed, inflight or dead) with the queue's row:
        from ``cursor`` (a ``next_cursor`` of an earlier page), else from ``offset``.
        Dead letters page by offset only."""
        if state not in DETAIL_STATES:
            raise ValueError(f"state must be one of {', '.join(DETAIL_STATES)}, got {state!r}")
        if cursor is not None and state == "dead":
            raise ValueError("dead letters page by offset, not by cursor")
        if cursor is not None and offset:
            raise ValueError("give a cursor or an offset, not both")
        # One read of heartbeats and pauses serves both the name check and the row.
        heartbeats, pauses = await self.directory.heartbeats(), await self.directory.pauses()
        await self.directory.require_queue(queue, heartbeats=heartbeats, pauses=pauses)
        await self.history.load()
        stats, heartbeats, pauses, current = await self._read([queue], heartbeats, pauses)
        row = None
        if stats:
            row = self._row(stats[0], heartbeats, pauses, current,
                            orphaned=await self._orphaned(stats[0], heartbeats, current.at))
        next_cursor = None
        if state == "dead":
            page = await self.dead_letters(queue, limit, offset)
            messages = [e.to_dict() for e in page.entries]
            next_offset = page.next_offset
        elif offset:
            self.directory.require_peek(f"list {state} messages")
            infos = await self.broker.peek(queue, state=state, limit=limit, offset=offset)
            messages = [i.to_dict() for i in infos]
            next_offset = offset + limit if limit and len(infos) == limit else None
        else:
            # From the top or from a cursor: the broker's cursor pages (one page of work each).
            self.directory.require_peek(f"list {state} messages")
            peeked = await self.broker.peek_page(queue, state=state, limit=limit, cursor=cursor)
            messages = [i.to_dict() for i in peeked.messages]
            next_cursor = peeked.next_cursor
            next_offset = limit if cursor is None and next_cursor is not None else None
        return QueueDetail(queue=queue, state=state, overview=row, messages=messages, limit=limit, offset=offset,
                           next_offset=next_offset, cursor=cursor, next_cursor=next_cursor)

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> DeadLetterPage:
        self.directory.require_dead_letters()
        return await self.broker.list_dead_letters(queue, limit, offset)

    async def dead_letter(self, queue: str, task_id: str) -> DeadLetterEntry | None:
        self.directory.require_dead_letters()
        return await self.broker.get_dead_letter(queue, task_id)


__all__ = ["DETAIL_STATES", "Inspector"]
