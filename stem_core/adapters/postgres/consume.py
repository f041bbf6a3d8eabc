"""Consuming from the PostgreSQL broker: subscriptions, LISTEN wake-ups, claims, the
janitor loop, and settling (see ``broker.py`` for the whole design).

A claim is one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`` over the
subscription's queues, best first, limited to the room under the prefetch cap; every
``MAINTAIN_INTERVAL_S`` (and whenever a NOTIFY says delayed rows arrived, or an idle wait
ran out) it is preceded, in the same round trip, by the maintenance statement that makes
due delayed rows and expired leases ready again.

Claims and settlements run on the ``synchronous_commit=off`` pool: a server crash can
lose the last few of those, which means a message is delivered again (at-least-once),
never that one is lost. A receipt is ``"<row id>:<lease number>"``; every statement that
settles it matches both, so a stale receipt changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import psycopg

from ..._aio import UNSENT, TurnBatch
from ...clock import monotonic
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription, raise_if_cancelled
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, LeaseLost
from ...settings import PRUNE_BATCH
from .channels import PostgresChannels
from .connection import QUEUE_CHANNEL_SUFFIX, PostgresConnection, PostgresDatabase
from .fused import FusedStatements, PostgresFused
from .janitor import VACUUM_CHECK_S, janitor_pass
from .listener import PostgresListener
from .results import status_params, status_row, status_rows_params
from .rows import INVALID_REASON, dead_letter_meta, decode, parse_receipt, unique_runs
from .sql import Queries
from .subscription import NEVER, PostgresSubscription, PostgresSubscriptions

log = logging.getLogger(__name__)

# An idle consumer re-checks the database at least this often (leases taken by others
# since its last look may expire; a notification may have been lost).
IDLE_RECHECK_S = 0.5
# A busy consumer runs the maintenance statement (promote due rows, reap expired
# leases) at least this often, so due work is not starved by a steady backlog.
MAINTAIN_INTERVAL_S = 0.5
# A consumer rides out a server restart: it retries every OUTAGE_RETRY_S and gives up
# (raising BrokerUnavailable) after CONSUME_OUTAGE_GRACE_S without a successful query.
OUTAGE_RETRY_S = 0.25
CONSUME_OUTAGE_GRACE_S = 30.0
JANITOR_TABLES = ("jobs", "queue_counts", "broadcasts", "subscribers")

# One ack_with_status waiting for the end of its event-loop turn: (statements, status
# row, row id, lease).
Settle = tuple[FusedStatements, tuple[Any, ...], int, int]


class PostgresConsumer:
    """Subscriptions, ``receive`` and the settle primitives of one broker."""

    def __init__(self, connection: PostgresConnection, queries: Queries, channels: PostgresChannels,
                 fused: PostgresFused, *, namespace: str, lease_seconds: float,
                 dead_letter_retention: float) -> None:
        self._connection = connection
        # Every dead_letter statement also prunes a bounded batch past retention.
        self._prune_params = {"retention": dead_letter_retention, "batch": PRUNE_BATCH}
        self._q = queries
        self._channels = channels
        self._fused = fused
        self._namespace = namespace
        self._default_ms = int(round(lease_seconds * 1000))
        self._subs = PostgresSubscriptions()
        self._listener: PostgresListener | None = None
        self._janitor: asyncio.Task[None] | None = None
        # Releases of claims that committed after their consumer was cancelled.
        self._background: set[asyncio.Task[Any]] = set()
        # ack_with_status calls made in one event-loop turn settle together.
        self._settles: TurnBatch[Settle] = TurnBatch(self._settle_rows)

    async def close(self) -> None:
        """Stop the janitor, wake every waiter (the connection is marked closed first, so
        they stop), finish the settles and releases under way, close the listener."""
        janitor, self._janitor = self._janitor, None
        if janitor is not None:
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
        self._subs.wake_all()
        await self._settles.drain()
        for task in list(self._background):
            await asyncio.gather(task, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    # -- subscriptions --------------------------------------------------------------

    async def open_subscription(self, sub: Subscription) -> None:
        self._connection.durable()
        st = self._subs.add(sub)
        try:
            if self._listener is None:
                channel = self._connection.schema + QUEUE_CHANNEL_SUFFIX
                self._listener = PostgresListener(self._connection.config, channel, self._subs.on_notify,
                                                  self._subs.on_reconnect)
            await self._listener.start()
            settle = await self._connection.fast()
            await settle.grow(self._subs.prefetch_total + 1)
            if self._janitor is None and sub.queues:
                self._janitor = asyncio.create_task(self._janitor_loop(), name=f"stem-pg-janitor-{self._namespace}")
            if sub.channels:
                await self._channels.subscribe(st, sub.consumer)
            raise_if_cancelled()
        except BaseException:
            self._subs.forget(sub)
            raise

    async def _janitor_loop(self) -> None:
        """Consumers create the dead rows, so while this broker consumes it keeps them in check."""
        while True:
            await asyncio.sleep(VACUUM_CHECK_S)
            if self._connection.fast_pool is not None:
                await janitor_pass(self._connection.fast_pool, self._connection.schema, JANITOR_TABLES)

    async def close_subscription(self, sub: Subscription) -> None:
        st: PostgresSubscription | None = sub.state
        self._subs.forget(sub)
        if st is not None:
            await self._channels.unsubscribe(st)

    # -- receiving ------------------------------------------------------------------

    async def receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        st: PostgresSubscription = sub.state
        deadline = monotonic() + timeout
        while True:
            raise_if_cancelled()
            self._connection.durable()
            st.wake.clear()
            try:
                out = await self._fetch(sub, st, limit)
                st.outage_since = None
            except BrokerUnavailable:
                now = monotonic()
                if not self._connection.is_open:
                    raise
                st.outage_since = st.outage_since if st.outage_since is not None else now
                if now - st.outage_since > CONSUME_OUTAGE_GRACE_S:
                    raise
                st.dirty = st.broadcast_dirty = True
                await asyncio.sleep(max(0.0, min(OUTAGE_RETRY_S, deadline - now)))
                if monotonic() >= deadline:
                    return []
                continue
            if out or timeout <= 0:
                return out
            now = monotonic()
            if now >= deadline:
                return []
            wait = min(deadline - now, IDLE_RECHECK_S, max(0.0, st.next_due - now))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # lands as the event fires, and a cancelled consumer would loop on forever.
            try:
                async with asyncio.timeout(wait):
                    await st.wake.wait()
            except TimeoutError:
                st.dirty = True

    async def _fetch(self, sub: Subscription, st: PostgresSubscription, limit: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = monotonic()
        if st.channels:
            out.extend(await self._channels.receive(st, sub.consumer, now))
        if limit > 0 and st.queues:
            maintain = st.dirty or now >= st.next_due or now - st.last_maintain >= MAINTAIN_INTERVAL_S
            task = asyncio.ensure_future(self._claim(sub, st, limit, maintain))
            try:
                out.extend(await asyncio.shield(task))
            except asyncio.CancelledError:
                # The claim may commit after we were cancelled: give its rows straight back.
                task.add_done_callback(self._release_later)
                raise
        return out

    async def _claim(self, sub: Subscription, st: PostgresSubscription, limit: int, maintain: bool) -> list[Delivery]:
        q = self._q
        queues = list(st.queues)
        params: dict[str, Any] = {"limit": limit, "consumer": sub.consumer, "default_ms": self._default_ms}
        if len(queues) == 1:
            claim, params["queue"] = q.claim_single, queues[0]
        else:
            claim, params["queues"] = q.claim, queues

        async def go(conn: psycopg.AsyncConnection) -> tuple[Any, list[Any]]:
            if not maintain:
                cur = await conn.execute(claim, params)
                return None, await cur.fetchall()
            async with conn.pipeline():
                mcur = await conn.execute(q.maintain, {"queues": queues})
                ccur = await conn.execute(claim, params)
            return await mcur.fetchone(), await ccur.fetchall()

        settle = await self._connection.fast()
        started = monotonic()
        mrow, rows = await settle.run(go)
        if mrow is not None:
            st.dirty = False
            st.last_maintain = started
            _, db_now, due = mrow
            st.next_due = NEVER if due is None else started + max(0.0, (due - db_now).total_seconds())
        rows.sort(key=lambda r: (-r[6], r[7], r[0]))
        out = []
        for row_id, lease, count, until, queue, raw, _prio, _ready in rows:
            envelope, ok = decode(raw, row_id, queue)
            if not ok:
                await self._dead_letter_invalid(row_id, lease, envelope)
                continue
            out.append(Delivery(envelope=envelope, receipt=f"{row_id}:{lease}", queue=queue,
                                lease_expires_at=until, delivery_count=count))
        return out

    async def _dead_letter_invalid(self, row_id: int, lease: int, envelope: Envelope) -> None:
        log.warning("stem: dead-lettering undecodable envelope in row %s of queue %s: %s",
                    row_id, envelope.queue, envelope.meta.get("error"))
        await (await self._connection.fast()).execute(self._q.dead_letter, {
            "id": row_id, "lease": lease, "msg_id": envelope.id, "name": envelope.name, "reason": INVALID_REASON,
            "meta": dead_letter_meta({"error": str(envelope.meta.get("error"))}), "envelope": envelope.to_json(),
            **self._prune_params,
        })

    def _release_later(self, task: "asyncio.Future[list[Delivery]]") -> None:
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        pairs = [parse_receipt(d.receipt) for d in task.result()]
        params = {"ids": [p[0] for p in pairs if p], "leases": [p[1] for p in pairs if p]}

        async def release() -> None:
            try:
                await (await self._connection.fast()).execute(self._q.release, params)
            except BrokerUnavailable:
                pass  # the leases expire and the rows are delivered again

        bg = asyncio.ensure_future(release())
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    # -- settling -------------------------------------------------------------------

    async def _settle_args(self, delivery: Delivery) -> tuple[PostgresDatabase, int, int] | None:
        """The pool and ``(row id, lease)`` for a queue delivery; None when there is nothing
        to settle (a broadcast copy, or a receipt that is not ours)."""
        self._connection.durable()
        if delivery.channel is not None:
            return None
        parsed = parse_receipt(delivery.receipt)
        if parsed is None:
            return None
        return await self._connection.fast(), parsed[0], parsed[1]

    async def ack(self, delivery: Delivery) -> None:
        args = await self._settle_args(delivery)
        if args is not None:
            db, row_id, lease = args
            await db.execute(self._q.ack, {"id": row_id, "lease": lease})

    async def nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        args = await self._settle_args(delivery)
        if args is None:
            return
        db, row_id, lease = args
        if not requeue:
            await db.execute(self._q.drop, {"id": row_id, "lease": lease})
            return
        env = Broker.requeued_envelope(delivery.envelope, delay)
        await db.execute(self._q.nack, {
            "id": row_id, "lease": lease, "not_before": env.not_before, "ready_at": env.ready_at,
            "envelope": env.to_json(),
        })

    async def extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        args = await self._settle_args(delivery)
        if args is None:
            raise LeaseLost(f"receipt {delivery.receipt!r} does not hold a PostgreSQL lease")
        db, row_id, lease = args
        rows = await db.fetch(self._q.extend, {"id": row_id, "lease": lease, "seconds": seconds})
        if not rows:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        return rows[0][0]

    async def dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        args = await self._settle_args(delivery)
        if args is None:
            return
        db, row_id, lease = args
        await db.execute(self._q.dead_letter, {
            "id": row_id, "lease": lease, "msg_id": None, "name": None, "reason": reason,
            "meta": dead_letter_meta(meta), "envelope": None, **self._prune_params,
        })

    async def ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        """``Broker._ack_with``: the status and the fenced delete in one statement, or False."""
        fused = self._fused.statements_for(backend)
        if fused is None:
            return False
        args = await self._settle_args(delivery)
        if args is None:
            return False
        _, row_id, lease = args
        await self._settles.add((fused, status_row(write), row_id, lease))
        return True

    async def _settle_rows(self, batch: list[Settle]) -> list[Any]:
        """Settle together what was settled during one event-loop turn (tasks of one
        claimed batch tend to finish together): one statement instead of one each.

        Status upserts and fenced DELETEs in one statement on the settle pool
        (synchronous_commit=off): a server crash loses both or neither, so the worst case
        is a task running again, never an acked task without its status. A stale receipt
        deletes nothing; its status is stored all the same. Outcomes: None per settle, or
        the error of its statement (and of every later one: they are not sent)."""
        outcomes: list[Any] = [UNSENT] * len(batch)
        try:
            db = await self._connection.fast()
            by_backend: dict[int, list[tuple[int, Settle]]] = {}
            for k, item in enumerate(batch):
                by_backend.setdefault(id(item[0]), []).append((k, item))
            for items in by_backend.values():
                for run in unique_runs(items, lambda entry: entry[1][1][0]):  # one status per task a statement
                    fused = run[0][1][0]
                    if len(run) == 1:
                        _, row, row_id, lease = run[0][1]
                        query, params = fused.ack_one, {**status_params(row), "id": row_id, "lease": lease}
                    else:
                        query, params = fused.ack_many, status_rows_params([item[1] for _, item in run])
                        params["row_ids"] = [item[2] for _, item in run]
                        params["leases"] = [item[3] for _, item in run]
                    await db.execute(query, params)
                    for k, _ in run:
                        outcomes[k] = None
        except Exception as exc:  # noqa: BLE001 - the settles not yet sent fail with it
            outcomes = [exc if outcome is UNSENT else outcome for outcome in outcomes]
        return outcomes


__all__ = ["PostgresConsumer"]
