"""The consuming side of ``PostgresBroker``: subscriptions, LISTEN wake-ups, claims,
broadcast cursors and the janitor loop (see ``broker.py`` for the whole design).

A claim is one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`` over the
subscription's queues, best first, limited to the room under the prefetch cap; every
``MAINTAIN_INTERVAL_S`` (and whenever a NOTIFY says delayed rows arrived, or an idle wait
ran out) it is preceded, in the same round trip, by the maintenance statement that makes
due delayed rows and expired leases ready again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from ...clock import monotonic
from ...contract.broker import Subscription, raise_if_cancelled
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable
from .connection import QUEUE_CHANNEL_SUFFIX, Database, Pools
from .janitor import VACUUM_CHECK_S, janitor_pass
from .listener import Listener
from .rows import INVALID_REASON, dead_letter_meta, decode, parse_receipt

if TYPE_CHECKING:
    from .connection import PgConfig
    from .sql import Queries

log = logging.getLogger(__name__)

# An idle consumer re-checks the database at least this often (leases taken by others
# since its last look may expire; a notification may have been lost).
IDLE_RECHECK_S = 0.5
# A busy consumer runs the maintenance statement (promote due rows, reap expired
# leases) at least this often, so due work is not starved by a steady backlog.
MAINTAIN_INTERVAL_S = 0.5
# Broadcast copies are read when a NOTIFY says so, and at least this often.
BROADCAST_POLL_S = 2.0
BROADCAST_READ_LIMIT = 1000
# Subscribers refresh ``seen_at`` this often; ones silent for SUBSCRIBER_STALE_S are
# forgotten (a crashed process must not pin broadcast rows forever).
SUBSCRIBER_TOUCH_S = 30.0
SUBSCRIBER_STALE_S = 300.0
# A consumer rides out a server restart: it retries every OUTAGE_RETRY_S and gives up
# (raising BrokerUnavailable) after CONSUME_OUTAGE_GRACE_S without a successful query.
OUTAGE_RETRY_S = 0.25
CONSUME_OUTAGE_GRACE_S = 30.0
NEVER = float("inf")
JANITOR_TABLES = ("jobs", "queue_counts", "broadcasts", "subscribers")


class _Sub:
    """Per-subscription state kept in ``Subscription.state``."""

    __slots__ = ("key", "queues", "channels", "wake", "dirty", "broadcast_dirty", "next_due", "last_maintain",
                 "last_broadcast", "last_touch", "outage_since")

    def __init__(self, key: str, queues: tuple[str, ...], channels: tuple[str, ...]) -> None:
        self.key = key
        self.queues = queues
        self.channels = channels
        self.wake = asyncio.Event()
        self.dirty = True
        self.broadcast_dirty = True
        self.next_due = NEVER
        self.last_maintain = 0.0
        self.last_broadcast = 0.0
        self.last_touch = monotonic()
        self.outage_since: float | None = None


class ConsumeMixin:
    """Mixed into ``PostgresBroker``, which provides the attributes declared here."""

    schema: str
    namespace: str
    _config: "PgConfig"
    _q: "Queries"
    _listener: Listener | None
    _pools: Pools
    _by_queue: dict[str, set[_Sub]]
    _by_channel: dict[str, set[_Sub]]
    _prefetch_total: int
    _closed: bool
    _default_ms: int
    _background: set["asyncio.Task[Any]"]
    _janitor: "asyncio.Task[None] | None"

    if TYPE_CHECKING:
        def _check_open(self) -> Database: ...
        async def _settle_pool(self) -> Database: ...
        def _channel_key(self, channel: str) -> str: ...

    def _on_notify(self, payload: str) -> None:
        kind, _, name = payload.partition(":")
        if kind == "b":
            for st in self._by_channel.get(name, ()):
                st.broadcast_dirty = True
                st.wake.set()
            return
        for st in self._by_queue.get(name, ()):
            if kind == "d":
                st.dirty = True
            st.wake.set()

    def _on_reconnect(self) -> None:
        for subs in (*self._by_queue.values(), *self._by_channel.values()):
            for st in subs:
                st.dirty = st.broadcast_dirty = True
                st.wake.set()

    async def _open_subscription(self, sub: Subscription) -> None:
        self._check_open()
        st = _Sub(uuid.uuid4().hex, sub.queues, sub.channels)
        sub.state = st
        for name in sub.queues:
            self._by_queue.setdefault(name, set()).add(st)
        for name in sub.channels:
            self._by_channel.setdefault(name, set()).add(st)
        if sub.queues:
            self._prefetch_total += sub.prefetch
        try:
            if self._listener is None:
                self._listener = Listener(self._config, self.schema + QUEUE_CHANNEL_SUFFIX, self._on_notify,
                                          self._on_reconnect)
            await self._listener.start()
            settle = await self._settle_pool()
            await settle.grow(self._prefetch_total + 1)
            if self._janitor is None and sub.queues:
                self._janitor = asyncio.create_task(self._janitor_loop(), name=f"stem-pg-janitor-{self.namespace}")
            if sub.channels:
                await self._subscribe(st, sub.consumer)
            raise_if_cancelled()
        except BaseException:
            self._forget(sub)
            raise

    async def _janitor_loop(self) -> None:
        """Consumers create the dead rows, so while this broker consumes it keeps them in check."""
        while True:
            await asyncio.sleep(VACUUM_CHECK_S)
            if self._pools.fast_db is not None:
                await janitor_pass(self._pools.fast_db, self.schema, JANITOR_TABLES)

    async def _subscribe(self, st: _Sub, consumer: str) -> None:
        q = self._q

        async def go(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                for channel in sorted(st.channels):
                    await conn.execute(q.channel_lock, {"key": self._channel_key(channel)})
                    await conn.execute(q.subscribe, {"subscription": st.key, "channel": channel, "consumer": consumer[:200]})

        await self._check_open().run(go)
        st.last_touch = monotonic()

    def _forget(self, sub: Subscription) -> None:
        st: _Sub | None = sub.state
        if st is None:
            return
        for index, names in ((self._by_queue, st.queues), (self._by_channel, st.channels)):
            for name in names:
                group = index.get(name)
                if group is not None:
                    group.discard(st)
                    if not group:
                        del index[name]
        if sub.queues:
            self._prefetch_total -= sub.prefetch
        sub.state = None

    async def _close_subscription(self, sub: Subscription) -> None:
        st: _Sub | None = sub.state
        self._forget(sub)
        db = self._pools.main
        if st is not None and st.channels and db is not None and not self._closed:
            try:
                await db.execute(self._q.unsubscribe, {"subscription": st.key})
            except BrokerUnavailable:
                pass  # the row goes stale and broadcast cleanup forgets it

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        st: _Sub = sub.state
        deadline = monotonic() + timeout
        while True:
            raise_if_cancelled()
            self._check_open()
            st.wake.clear()
            try:
                out = await self._fetch(sub, st, limit)
                st.outage_since = None
            except BrokerUnavailable:
                now = monotonic()
                if self._closed:
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

    async def _fetch(self, sub: Subscription, st: _Sub, limit: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = monotonic()
        if st.channels:
            if now - st.last_touch >= SUBSCRIBER_TOUCH_S:
                await self._touch(st, sub.consumer)
            if st.broadcast_dirty or now - st.last_broadcast >= BROADCAST_POLL_S:
                st.broadcast_dirty = False
                st.last_broadcast = now
                out.extend(await self._read_broadcasts(st))
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

    async def _claim(self, sub: Subscription, st: _Sub, limit: int, maintain: bool) -> list[Delivery]:
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

        settle = await self._settle_pool()
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
        await (await self._settle_pool()).execute(self._q.dead_letter, {
            "id": row_id, "lease": lease, "msg_id": envelope.id, "name": envelope.name, "reason": INVALID_REASON,
            "meta": dead_letter_meta({"error": str(envelope.meta.get("error"))}), "envelope": envelope.to_json(),
        })

    def _release_later(self, task: "asyncio.Future[list[Delivery]]") -> None:
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        pairs = [parse_receipt(d.receipt) for d in task.result()]
        params = {"ids": [p[0] for p in pairs if p], "leases": [p[1] for p in pairs if p]}

        async def release() -> None:
            try:
                await (await self._settle_pool()).execute(self._q.release, params)
            except BrokerUnavailable:
                pass  # the leases expire and the rows are delivered again

        bg = asyncio.ensure_future(release())
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    async def _read_broadcasts(self, st: _Sub) -> list[Delivery]:
        rows = await self._check_open().fetch(self._q.broadcast_read, {"subscription": st.key, "limit": BROADCAST_READ_LIMIT})
        out = []
        for row_id, channel, raw in rows:
            envelope, ok = decode(raw, row_id, channel)
            if not ok:
                log.warning("stem: skipping undecodable broadcast %s on channel %s", row_id, channel)
                continue
            out.append(Delivery(envelope=envelope, receipt=f"b:{channel}:{row_id}", queue=channel, channel=channel))
        if len(rows) >= BROADCAST_READ_LIMIT:
            st.broadcast_dirty = True
        return out

    async def _touch(self, st: _Sub, consumer: str) -> None:
        st.last_touch = monotonic()
        if not await self._check_open().execute(self._q.touch_subscription, {"subscription": st.key}):
            # Forgotten as stale (this process stalled for minutes): subscribe again from now.
            await self._subscribe(st, consumer)


__all__ = ["ConsumeMixin", "SUBSCRIBER_STALE_S"]
