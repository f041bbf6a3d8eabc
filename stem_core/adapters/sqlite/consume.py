"""``SQLiteConsumer``: subscriptions, claims and waiting, and settling what was claimed.

Waiting for work (idle consumers): each round reads ``PRAGMA data_version`` on a
read-only connection, on the event loop (about 3 us, no thread hop). It changes when any
connection - this process's or another's - commits, and only then does the consumer run a
claim transaction. Between rounds it sleeps on the file's in-process doorbell, which
local publishes ring at once and the database's single ``ChangePoller`` rings when it
sees another process commit (probing every 0.5 ms after activity, backing off to
``poll_interval``, 4 ms, while idle). A claim that finds nothing also returns when the
next delayed message or lease of the subscription's queues falls due (on the database's
clock), and the consumer wakes for it then.

A receive round is one hop to the database thread (``jobs.receive_step``): the claim,
the subscription's new broadcasts and, every ``SUBSCRIBER_TOUCH_S``, its cursor write-back
and the broadcast sweep (``channels.py``), in one transaction. Settling is one hop per
call, fenced by the receipt's token (``jobs.py``); with a SQLite result backend on the
same connection, ``ack_with_status`` writes the status in the ack's transaction.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...clock import monotonic
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription
from ...envelope import Delivery
from ...errors import LeaseLost
from . import jobs
from .backend import fused_statuses
from .channels import SQLiteChannels
from .db import SQLiteDatabase
from .poller import POLL_MIN_INTERVAL_S
from .rows import moment

# Wake this long after a delayed message or lease falls due, so the database clock (ms
# resolution) agrees that it has.
DUE_SLACK_S = 0.002
# Empty claim rounds back off from POLL_MIN_INTERVAL_S, doubling at most this many times
# (and never beyond poll_interval).
QUIET_DOUBLINGS = 8


@dataclass(slots=True)
class SQLiteSubscription:
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


class SQLiteConsumer:
    """The consuming and settling primitives of one broker on one database."""

    def __init__(self, db: SQLiteDatabase, namespace: str, channels: SQLiteChannels, *, lease_seconds: float,
                 poll_interval: float, dead_letter_retention: float) -> None:
        self._db = db
        self._dead_letter_retention = dead_letter_retention
        self._namespace = namespace
        self._channels = channels
        # The lease of envelopes without a visibility timeout, as the claim's SQL takes it.
        self._default_ms = int(round(lease_seconds * 1000))
        self._poll_interval = poll_interval

    # -- subscriptions --------------------------------------------------------------

    async def open_subscription(self, sub: Subscription) -> None:
        self._db.check_open()
        # A channel-only subscription claims nothing, so nothing of it ever falls due; with
        # due_at 0 its receive loop would spin on the event loop without ever sleeping.
        state = SQLiteSubscription(subscription=uuid.uuid4().hex, due_at=0.0 if sub.queues else math.inf)
        if sub.channels:
            state.cursors = await self._channels.subscribe(state.subscription, sub.consumer, sub.channels)
            state.touch_at = self._channels.next_touch(monotonic())
        sub.state = state

    async def close_subscription(self, sub: Subscription) -> None:
        state: SQLiteSubscription | None = sub.state
        if state is None or not sub.channels:
            return
        await self._channels.unsubscribe(state.subscription)

    # -- receiving ------------------------------------------------------------------

    async def receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: SQLiteSubscription = sub.state
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

    async def _round(self, sub: Subscription, state: SQLiteSubscription, limit: int, version: int | None,
                     touch: bool) -> list[Delivery]:
        """One trip to the database: claim (when ``limit``), read broadcasts, maybe touch."""
        now = monotonic()
        sweep = touch and self._channels.sweep_due(now)
        request = jobs.StepRequest(
            ns=self._namespace,
            queues=sub.queues,
            limit=limit,
            consumer=sub.consumer,
            default_ms=self._default_ms,
            subscription=state.subscription,
            cursors=state.cursors,
            dead_letter_retention=self._dead_letter_retention,
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
            state.touch_at = self._channels.next_touch(now)
        if sweep:
            self._channels.swept(now)
        out = self._channels.deliveries(result.broadcasts)
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

    async def unclaim(self, deliveries: list[Delivery]) -> None:
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

    async def ack(self, delivery: Delivery) -> None:
        parsed = self._receipt(delivery)
        if parsed is not None:
            await self._db.run(jobs.ack, *parsed)

    async def ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        """Status and ack in one transaction; False (nothing done) when ``backend`` is not
        on this connection."""
        statuses = fused_statuses(backend, self._db, [write])
        parsed = jobs.parse_receipt(delivery.receipt) if statuses is not None else None
        if statuses is None or parsed is None:
            return False
        await self._db.run(jobs.ack, *parsed, statuses)
        self._db.bell.ring()  # for watchers of the status
        return True

    async def nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        """Give the row back as its attempt + 1 copy (``Broker.requeued_envelope``), or drop
        it when not ``requeue``."""
        parsed = self._receipt(delivery)
        if parsed is None:
            return
        envelope = Broker.requeued_envelope(delivery.envelope, delay) if requeue else None
        if await self._db.run(jobs.nack, *parsed, envelope) and requeue:
            self._db.bell.ring()

    async def extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        parsed = self._receipt(delivery)
        until = await self._db.run(jobs.extend, *parsed, seconds) if parsed is not None else None
        if until is None:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        deadline = moment(until)
        assert deadline is not None
        return deadline

    async def dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        parsed = self._receipt(delivery)
        if parsed is not None:
            await self._db.run(jobs.dead_letter, self._namespace, *parsed, reason, meta, self._dead_letter_retention)


__all__ = ["SQLiteConsumer", "SQLiteSubscription"]
