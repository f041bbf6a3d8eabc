"""``SQLiteBroker``: the embedded default broker, durable and shared by every process on
one machine through one database file.

Waiting for work (idle consumers): each round reads ``PRAGMA data_version`` on a
read-only connection, on the event loop (about 3 us, no thread hop). It changes when any
connection - this process's or another's - commits, and only then does the consumer run a
claim transaction. Between rounds it sleeps on the file's in-process doorbell, which
local publishes ring at once and the broker's single ``ChangePoller`` rings when it sees
another process commit (probing every 0.5 ms after activity, backing off to
``poll_interval``, 4 ms, while idle). A claim that finds nothing also returns when the
next delayed message or lease of the subscription's queues falls due (on the database's
clock), and the consumer wakes for it then.

With a SQLite result backend open on the same file in this process, the two share one
connection (``db.Link``), so ``Broker.enqueue`` and ``Broker.ack_with_status`` write the
statuses (``store.put_statuses``) and the jobs in one transaction (``jobs.enqueue``,
``jobs.ack``); with a backend anywhere else they take the two separate steps.

Everything else (tables, counters, fencing, broadcasts) is described where it lives:
``migrations/0001_broker.sql``, ``jobs.py``, ``repair.py``, ``broadcasts.py``.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ...clock import monotonic, utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ReplayResult
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, LeaseLost, StemError
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from . import broadcasts, jobs, repair, store
from .db import Database
from .poller import POLL_MIN_INTERVAL_S
from .results import SQLiteBackend
from .rows import moment
from .url import BUSY_TIMEOUT_S, POLL_INTERVAL_S, parse_sqlite_url

BROKER_OPTIONS = frozenset({"lease_seconds", "busy_timeout", "poll_interval"})
# Wake this long after a delayed message or lease falls due, so the database clock (ms
# resolution) agrees that it has.
DUE_SLACK_S = 0.002
# Empty claim rounds back off from POLL_MIN_INTERVAL_S, doubling at most this many times
# (and never beyond poll_interval).
QUIET_DOUBLINGS = 8


@dataclass(slots=True)
class _SubState:
    """What one subscription remembers between receive rounds."""

    subscription: str
    cursors: dict[str, int] = field(default_factory=dict)
    claim_version: int | None = None
    look_version: int | None = None
    due_at: float = 0.0
    touch_at: float = math.inf
    # Claim rounds in a row that found nothing, and the earliest time a mere commit
    # elsewhere (not a due time) may trigger the next one.
    empty_rounds: int = 0
    quiet_until: float = 0.0


class SQLiteBroker(Broker):
    """Broker over one SQLite file (WAL); see the module docstring and ``__init__.py``."""

    scheme: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True,
        priority=True,
        broadcast=True,
        dead_letters=True,
        lease_extension=True,
        peek=True,
        durable=True,
        cross_process=True,
    )

    def __init__(
        self,
        path: Path,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        busy_timeout: float = BUSY_TIMEOUT_S,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self.path = path
        self._db = Database(path, busy_timeout_s=busy_timeout, unavailable=BrokerUnavailable, label="broker",
                            poll_interval=poll_interval)
        self._poll_interval = poll_interval
        self._next_sweep = 0.0

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "SQLiteBroker":
        parsed = parse_sqlite_url(url, options, BROKER_OPTIONS)
        return cls(parsed.path, namespace=namespace, **parsed.options)

    async def connect(self) -> "SQLiteBroker":
        await self._db.open()
        return self

    async def close(self) -> None:
        # Waiting consumers wake, find the broker closed and raise BrokerUnavailable.
        await self._db.close()

    # -- producing ------------------------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        await self._db.run(jobs.publish, self.namespace, envelopes)
        self._db.bell.ring()

    async def _enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        statuses = self._fused(backend, writes)
        if statuses is None:
            return False
        await self._db.run(jobs.enqueue, self.namespace, envelopes, statuses)
        self._db.bell.ring()
        return True

    def _fused(self, backend: ResultBackend, writes: list[StatusWrite]) -> store.StatusWrites | None:
        """``writes`` ready to ride in this broker's transaction when ``backend`` is a
        SQLite backend on this broker's connection (same file, this process), else None."""
        if not isinstance(backend, SQLiteBackend):
            return None
        return backend.fused_statuses(self._db, writes)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        if await self._db.run(broadcasts.publish, self.namespace, channel, envelope.to_json()):
            self._db.bell.ring()

    # -- consuming ------------------------------------------------------------------

    async def _open_subscription(self, sub: Subscription) -> None:
        self._db.check_open()
        # A channel-only subscription claims nothing, so nothing of it ever falls due; with
        # due_at 0 its receive loop would spin on the event loop without ever sleeping.
        state = _SubState(subscription=uuid.uuid4().hex, due_at=0.0 if sub.queues else math.inf)
        if sub.channels:
            state.cursors = await self._db.run(
                broadcasts.subscribe, self.namespace, state.subscription, sub.consumer, sub.channels
            )
            state.touch_at = monotonic() + broadcasts.SUBSCRIBER_TOUCH_S
        sub.state = state

    async def _close_subscription(self, sub: Subscription) -> None:
        state: _SubState | None = sub.state
        if state is None or not sub.channels or self._db.closed:
            return
        try:
            await self._db.run(broadcasts.unsubscribe, self.namespace, state.subscription)
        except StemError:
            pass  # the sweep drops it once it goes stale

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: _SubState = sub.state
        deadline = monotonic() + timeout
        while True:
            self._db.check_open()
            rings = self._db.bell.rings
            version = self._db.data_version()
            now = monotonic()
            quiet = now < state.quiet_until
            claim_due = limit > 0 and (version is None or version != state.claim_version)
            look_due = bool(sub.channels) and (version is None or version != state.look_version)
            claim = limit > 0 and (now >= state.due_at or (claim_due and not quiet))
            look = look_due and not quiet
            touch = bool(sub.channels) and now >= state.touch_at
            if claim or look or touch:
                out = await self._round(sub, state, limit if claim else 0, version, touch)
                if out:
                    state.empty_rounds, state.quiet_until = 0, 0.0
                    return out
                if claim or look:
                    # Woken for nothing (others committing elsewhere in the file): back
                    # off up to poll_interval, which still bounds the pick-up latency.
                    state.empty_rounds += 1
                    gap = POLL_MIN_INTERVAL_S * 2 ** min(state.empty_rounds, QUIET_DOUBLINGS)
                    state.quiet_until = monotonic() + min(gap, self._poll_interval)
                # The round consumed the change it looked at (a round always reads broadcasts).
                claim_due, look_due = claim_due and not claim, False
                now = monotonic()
            if now >= deadline:
                return []
            wake_at = min(deadline, state.due_at, state.touch_at)
            if claim_due or look_due:
                wake_at = min(wake_at, state.quiet_until)  # a change is waiting out the quiet gap
            await self._db.poller.wait(rings, version, wake_at - now)

    async def _round(self, sub: Subscription, state: _SubState, limit: int, version: int | None, touch: bool) -> list[Delivery]:
        """One trip to the database: claim (when ``limit``), read broadcasts, maybe touch."""
        now = monotonic()
        sweep = touch and now >= self._next_sweep
        request = jobs.StepRequest(
            ns=self.namespace,
            queues=sub.queues,
            limit=limit,
            consumer=sub.consumer,
            default_ms=int(round(self.lease_seconds * 1000)),
            subscription=state.subscription,
            cursors=state.cursors,
            touch=touch,
            sweep=sweep,
            precheck=state.empty_rounds > 0,
        )
        result = await self._step(request)
        # With broadcasts left over, the next round must look again without a new commit.
        state.look_version = None if result.more else version
        state.cursors = result.cursors
        if limit > 0:
            state.claim_version = version
            due_in = result.next_due_in
            state.due_at = monotonic() + due_in + DUE_SLACK_S if due_in is not None else math.inf
        if touch:
            state.touch_at = now + broadcasts.SUBSCRIBER_TOUCH_S
        if sweep:
            self._next_sweep = now + broadcasts.SWEEP_INTERVAL_S
        out = [
            Delivery(envelope=env, receipt=f"b:{row_id}", queue=channel, channel=channel)
            for row_id, channel, env in result.broadcasts
        ]
        out.extend(
            Delivery(
                envelope=c.envelope,
                receipt=c.receipt,
                queue=c.queue,
                lease_expires_at=moment(c.locked_until),
                delivery_count=c.delivery_count,
            )
            for c in result.claimed
        )
        return out

    async def _step(self, request: jobs.StepRequest) -> jobs.StepResult:
        # The claim commits on the database thread even if our caller is cancelled
        # meanwhile; then nobody would see the rows until their leases expired, so a
        # cancelled round hands its rows straight back.
        fut = self._db.submit(jobs.receive_step, request)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(self._give_back)
            raise

    def _give_back(self, fut: "asyncio.Future[jobs.StepResult]") -> None:
        if fut.cancelled() or fut.exception() is not None or self._db.closed:
            return
        claimed = [(c.row_id, c.token) for c in fut.result().claimed]
        if claimed:
            back = self._db.submit(jobs.unlease, claimed)
            back.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _unclaim(self, deliveries: list[Delivery]) -> None:
        claimed = [parsed for d in deliveries if (parsed := self._receipt(d)) is not None]
        if claimed:
            await self._db.run(jobs.unlease, claimed)
            self._db.bell.ring()

    # -- settling -------------------------------------------------------------------

    def _receipt(self, delivery: Delivery) -> tuple[int, int] | None:
        """``(row id, token)`` of a queue delivery; None for broadcasts and foreign receipts."""
        self._db.check_open()
        if delivery.channel is not None:
            return None
        return jobs.parse_receipt(delivery.receipt)

    async def _ack(self, delivery: Delivery) -> None:
        parsed = self._receipt(delivery)
        if parsed is not None:
            await self._db.run(jobs.ack, *parsed)

    async def _ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        statuses = self._fused(backend, [write])
        parsed = jobs.parse_receipt(delivery.receipt) if statuses is not None else None
        if statuses is None or parsed is None:
            return False
        await self._db.run(jobs.ack, *parsed, statuses)
        self._db.bell.ring()  # for watchers of the status
        return True

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        parsed = self._receipt(delivery)
        if parsed is None:
            return
        envelope = self.requeued_envelope(delivery.envelope, delay) if requeue else None
        if await self._db.run(jobs.nack, *parsed, envelope) and requeue:
            self._db.bell.ring()

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        parsed = self._receipt(delivery)
        until = await self._db.run(jobs.extend, *parsed, seconds) if parsed is not None else None
        if until is None:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        deadline = moment(until)
        assert deadline is not None
        return deadline

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        parsed = self._receipt(delivery)
        if parsed is not None:
            await self._db.run(jobs.dead_letter, self.namespace, *parsed, reason, meta)

    # -- inspecting and repairing ---------------------------------------------------

    async def list_queues(self) -> list[str]:
        return await self._db.run(repair.list_queues, self.namespace)

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        return await self._db.run(repair.queue_stats, self.namespace, queues)

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        return await self._db.run(repair.peek, self.namespace, queue, state, limit, offset)

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        count = await self._db.run(repair.requeue, self.namespace, queue, ids)
        if count:
            self._db.bell.ring()
        return count

    async def _remove(self, queue: str, ids: set[str]) -> int:
        return await self._db.run(repair.remove, self.namespace, queue, ids)

    async def _purge(self, queue: str) -> int:
        return await self._db.run(repair.purge, self.namespace, queue)

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        return await self._db.run(repair.dead_page, self.namespace, queue, limit, offset)

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        return await self._db.run(repair.dead_get, self.namespace, queue, id)

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        now = utcnow()
        entries = await self._db.run(
            lambda conn: repair.replay(
                conn, self.namespace, queue, limit=limit, since=since, ids=ids, task=task, dry_run=dry_run,
                accept=lambda entry: self.matches_replay(entry, since, ids, task),
                rebuild=lambda env: self.replayed_envelope(env, delay, now=now).replace(queue=queue),
            )
        )
        if entries and not dry_run:
            self._db.bell.ring()
        return ReplayResult(entries=entries, dry_run=dry_run)

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        return await self._db.run(
            lambda conn: repair.purge_dead(
                conn, self.namespace, queue, since=since, limit=limit,
                accept=lambda entry: self.matches_replay(entry, since, None, None),
            )
        )


__all__ = ["BROKER_OPTIONS", "SQLiteBroker"]
