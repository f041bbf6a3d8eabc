"""The read half of ``Ops``: overview, workers, leases, queue pages, dead letters, audit.

``overview`` reads only counters, heartbeats and records, so its cost does not grow with
queue length (``bench/ops_overview.py`` measures it); the others read bounded pages.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Sequence

from ..contract import DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, WorkerHeartbeat
from ..contract.broker import PEEK_STATES
from ..envelope import validate_name
from ..errors import StemError, Unsupported
from ..settings import DEFAULT_PAGE_LIMIT
from . import text
from .base import LEASES_LIMIT, OpsBase, entry_state, entry_time, heartbeat_age, is_internal, log
from .models import LeaseInfo, Overview, QueueDetail, QueueOverview, WorkerInfo
from .rates import PERSIST_GAP_S, RATE_RECORD_KEY, RATE_RECORD_KIND, RATE_RECORD_TTL_S, Sample
from .verdict import queue_verdict

DETAIL_STATES = (*PEEK_STATES, "dead")


class InspectMixin(OpsBase):
    """Reads. Mixed into ``Ops``."""

    # -- overview -------------------------------------------------------------------

    async def overview(self, queues: Sequence[str] | None = None, *, sample_interval: float = 0.0) -> Overview:
        """Every queue (or ``queues``): counts, oldest age, rates, serving workers, verdict.

        When no earlier sample gives a rate window and ``sample_interval`` > 0, a second
        reading is taken that many seconds later (one-shot callers; see docs/ops.md).
        """
        names = [validate_name(q) for q in queues] if queues is not None else None
        await self._load_rates()
        stats, heartbeats, pauses, current = await self._read(names)
        if sample_interval > 0 and any(self.rates.baseline(current.at, s.queue) is None for s in stats):
            self.rates.observe(current)
            await asyncio.sleep(sample_interval)
            stats, heartbeats, pauses, current = await self._read(names)
        rows = [self._row(s, heartbeats, pauses, current) for s in stats]
        self.rates.observe(current)
        await self._persist_rates(current.at)
        live = sum(1 for hb in heartbeats.values() if self._alive(hb, current.at))
        return Overview(
            at=current.at,
            namespace=self.namespace,
            broker=self.broker.scheme,
            backend=self.backend.scheme,
            capabilities=self.broker.capabilities.to_dict(),
            queues=rows,
            live_workers=live,
            rates_ready=any(r.net_rate is not None for r in rows),
        )

    async def _read(
        self, names: list[str] | None, heartbeats: dict[str, WorkerHeartbeat] | None = None,
        pauses: dict[str, dict[str, Any]] | None = None,
    ) -> tuple[list[QueueStats], dict[str, WorkerHeartbeat], dict[str, dict[str, Any]], Sample]:
        if heartbeats is None:
            heartbeats = await self._heartbeats()
        if pauses is None:
            pauses = await self._pauses()
        if names is None:
            names = await self._known_queues(heartbeats, pauses)
        stats = await self.broker.queue_stats(names) if names else []
        now = self._now()
        return stats, heartbeats, pauses, Sample.take(now, stats, heartbeats.values())

    def _row(
        self, s: QueueStats, heartbeats: dict[str, WorkerHeartbeat], pauses: dict[str, dict[str, Any]], current: Sample
    ) -> QueueOverview:
        now = current.at
        live = [hb for hb in heartbeats.values() if self._alive(hb, now)]
        serving = [hb for hb in live if s.queue in hb.queues and s.queue not in hb.paused_queues]
        reported = sum(1 for hb in live for e in hb.inflight if e.get("queue") == s.queue)
        active = sum(1 for hb in serving for e in hb.inflight if e.get("queue") == s.queue and entry_state(e) == "active")
        record = pauses.get(s.queue)
        # A pause aimed at chosen workers leaves the queue served by the others.
        whole_pause = record if record is not None and not record.get("workers") else None
        rates = self.rates.rates(s.queue, current)
        verdict = queue_verdict(
            pending=s.pending, delayed=s.delayed, inflight=s.inflight, oldest_age=s.oldest_pending_age,
            pause=whole_pause, serving=len(serving), rates=rates,
        )
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
            unaccounted_leases=max(0, s.inflight - reported) if s.inflight is not None else 0,
            paused=record is not None,
            paused_reason=record.get("reason") if record else None,
            paused_by=record.get("by") if record else None,
            paused_until=record.get("until") if record else None,
            verdict=verdict.code,
            verdict_text=verdict.text,
            eta_seconds=verdict.eta_seconds,
        )

    async def _load_rates(self) -> None:
        if not self.persist_rates or self._rates_loaded:
            return
        self._rates_loaded = True
        try:
            self.rates.load_record(await self.backend.get_record(RATE_RECORD_KIND, RATE_RECORD_KEY))
        except (StemError, ValueError) as exc:
            log.debug("no persisted rate samples: %s", exc)

    async def _persist_rates(self, now: datetime) -> None:
        if not self.persist_rates:
            return
        if self._persisted_at is not None and (now - self._persisted_at).total_seconds() < PERSIST_GAP_S:
            return
        self._persisted_at = now
        try:
            await self.backend.put_record(RATE_RECORD_KIND, RATE_RECORD_KEY, self.rates.to_record(), ttl=RATE_RECORD_TTL_S)
        except (StemError, ValueError) as exc:
            # The history is a convenience: losing it costs a rate window, never the read.
            log.debug("could not persist rate samples: %s", exc)

    # -- workers --------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Every worker with a heartbeat, stale ones included (flagged)."""
        now = self._now()
        out = []
        for hb in (await self._heartbeats()).values():
            age = heartbeat_age(hb, now)
            states = [entry_state(e) for e in hb.inflight]
            out.append(
                WorkerInfo(
                    worker_id=hb.worker_id, host=hb.host, pid=hb.pid, queues=list(hb.queues),
                    concurrency=hb.concurrency, active=states.count("active"), reserved=states.count("reserved"),
                    processed=hb.processed, failed=hb.failed, retried=hb.retried,
                    paused_queues=list(hb.paused_queues), version=hb.version, heartbeat_at=hb.timestamp,
                    heartbeat_age=age, stale=age > self.stale_after, inflight=[dict(e) for e in hb.inflight],
                )
            )
        return sorted(out, key=lambda w: w.worker_id)

    # -- leases ---------------------------------------------------------------------

    async def leases(self, queue: str | None = None, *, limit: int = LEASES_LIMIT) -> list[LeaseInfo]:
        """Every in-flight delivery (of ``queue``, or of every queue) with its holder's
        heartbeat; ``stuck`` when the lease expired or the holder is not alive."""
        self._require_peek("list leases")
        heartbeats = await self._heartbeats()
        if queue is not None:
            names = [await self.require_queue(queue, heartbeats=heartbeats)]
        else:
            stats = await self.broker.queue_stats()
            names = [s.queue for s in stats if (s.inflight or 0) > 0 and not is_internal(s.queue)]
        out: list[LeaseInfo] = []
        for name in names:
            for info in await self.broker.peek(name, state="inflight", limit=limit):
                out.append(self._lease(name, info, heartbeats, self._now()))
        return out

    def _lease(self, queue: str, info: MessageInfo, heartbeats: dict[str, WorkerHeartbeat], now: datetime) -> LeaseInfo:
        holder = info.lease_holder
        hb = heartbeats.get(holder) if holder else None
        hb_age = heartbeat_age(hb, now) if hb is not None else None
        entry = next((e for e in hb.inflight if e.get("id") == info.envelope.id), None) if hb is not None else None
        started = entry_time(entry, "started_at") if entry is not None else None
        expires_in = (info.lease_expires_at - now).total_seconds() if info.lease_expires_at is not None else None
        alive = self._alive(hb, now)
        reason: str | None = None
        if expires_in is not None and expires_in <= 0:
            reason = f"lease expired {text.duration(-expires_in)} ago"
        elif holder and hb is None:
            reason = f"holder {holder} has no heartbeat (dead, or not a Stem worker)"
        elif holder and not alive and hb_age is not None:
            reason = f"holder heartbeat {text.duration(hb_age)} old (stale after {text.duration(self.stale_after)})"
        return LeaseInfo(
            queue=queue, id=info.envelope.id, name=info.envelope.name, holder=holder,
            state=entry_state(entry) if entry is not None else None,
            held_for=(now - started).total_seconds() if started is not None else None,
            lease_expires_at=info.lease_expires_at, expires_in=expires_in, heartbeat_age=hb_age,
            holder_alive=alive, delivery_count=info.delivery_count, attempt=info.envelope.attempt,
            stuck=reason is not None, stuck_reason=reason,
        )

    def _require_peek(self, what: str) -> None:
        if not self.broker.capabilities.peek:
            raise Unsupported(f"the {self.broker.scheme} broker cannot peek at messages, so Stem cannot {what}")

    # -- one queue ------------------------------------------------------------------

    async def queue_detail(
        self, queue: str, state: str = "pending", limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0
    ) -> QueueDetail:
        """One page of ``state`` (pending, delayed, inflight or dead) with the queue's row."""
        if state not in DETAIL_STATES:
            raise ValueError(f"state must be one of {', '.join(DETAIL_STATES)}, got {state!r}")
        # One read of heartbeats and pauses serves both the name check and the row.
        heartbeats, pauses = await self._heartbeats(), await self._pauses()
        await self.require_queue(queue, heartbeats=heartbeats, pauses=pauses)
        await self._load_rates()
        stats, heartbeats, pauses, current = await self._read([queue], heartbeats, pauses)
        row = self._row(stats[0], heartbeats, pauses, current) if stats else None
        if state == "dead":
            page = await self.dead_letters(queue, limit, offset)
            messages = [e.to_dict() for e in page.entries]
            next_offset = page.next_offset
        else:
            self._require_peek(f"list {state} messages")
            infos = await self.broker.peek(queue, state=state, limit=limit, offset=offset)
            messages = [i.to_dict() for i in infos]
            next_offset = offset + limit if limit and len(infos) == limit else None
        return QueueDetail(queue=queue, state=state, overview=row, messages=messages, limit=limit, offset=offset,
                           next_offset=next_offset)

    # -- dead letters and audit ------------------------------------------------------

    async def dead_letters(self, queue: str, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> DeadLetterPage:
        self._require_dead_letters()
        return await self.broker.list_dead_letters(queue, limit, offset)

    async def dead_letter(self, queue: str, task_id: str) -> DeadLetterEntry | None:
        self._require_dead_letters()
        return await self.broker.get_dead_letter(queue, task_id)

    def _require_dead_letters(self) -> None:
        if not self.broker.capabilities.dead_letters:
            raise Unsupported(f"the {self.broker.scheme} broker keeps no dead letters")

    async def audit_log(self, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        return await self.backend.list_audit(limit, offset)


__all__ = ["DETAIL_STATES", "InspectMixin"]
