"""``PostgresBroker``: the durable, SQL-visible broker (SPEC §4.4).

Layout (one schema per namespace, see ``migrations/0001_broker.sql``): a ``jobs`` table
whose rows are ready, delayed or leased; ``queue_counts`` kept by triggers in the same
transaction as every change; ``dead_letters``; ``broadcasts`` with per-subscriber cursors.

Consuming: a claim is one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)``,
priority then age, up to the room left under the prefetch cap. Leases are
``locked_until`` on the database clock; a receipt is ``"<row id>:<lease number>"`` and
every claim or operator requeue bumps the number, which fences stale settles. Idle
consumers sleep on a LISTEN connection (one per broker) and wake on NOTIFY, which the
counters trigger sends only when a queue goes from empty to non-empty; their sleep is
also bounded by the next delayed row or lease falling due, and by ``IDLE_RECHECK_S``
(a slow fallback for notifications lost while the listener reconnects, and for leases
other consumers took since we last looked).

Durability: publishes commit synchronously. Claims and settlements run on a second
pool with ``synchronous_commit=off``: a server crash can lose the last few of those,
which means a message is delivered again (at-least-once), never that one is lost.

Transactional enqueue: ``publish(..., connection=conn)`` / ``publish_many(...,
connection=conn)`` insert on the caller's ``psycopg.AsyncConnection`` inside the caller's
transaction, so the job commits or rolls back with the application's own rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, ClassVar, Iterable

import psycopg

from ...clock import monotonic, utcnow
from ...contract.backend import check_json
from ...contract.broker import Broker, Subscription
from ...contract.types import Capabilities
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, LeaseLost
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .connection import (
    DEFAULT_POOL_MAX,
    DEFAULT_POOL_MIN,
    QUEUE_CHANNEL_SUFFIX,
    Database,
    PgConfig,
    parse_url,
    positive_float,
    positive_int,
    prepare_schema,
    schema_name,
    translate,
)
from .inspect import InspectMixin
from .janitor import VACUUM_CHECK_S, janitor_pass
from .listener import Listener
from .rows import INVALID_REASON, decode, parse_receipt, publish_many_params, publish_params, ready_at
from .sql import Queries, migrate

log = logging.getLogger(__name__)

BROKER_OPTIONS = {"lease_seconds": positive_float, "pool_size": positive_int}
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


class PostgresBroker(InspectMixin, Broker):
    """The PostgreSQL broker; see the module docstring for the design."""

    scheme: ClassVar[str] = "postgresql"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True, priority=True, broadcast=True, dead_letters=True, lease_extension=True, peek=True,
        durable=True, cross_process=True,
    )

    def __init__(self, config: PgConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, pool_size: int | None = None) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self._config = config
        self.schema = schema_name(self.namespace)
        self._q = Queries(self.schema)
        self._pool_size = pool_size
        self._db: Database | None = None
        self._settle_db: Database | None = None
        self._settle_lock = asyncio.Lock()
        self._listener: Listener | None = None
        self._by_queue: dict[str, set[_Sub]] = {}
        self._by_channel: dict[str, set[_Sub]] = {}
        self._prefetch_total = 0
        self._closed = False
        self._default_ms = int(round(self.lease_seconds * 1000))
        self._background: set[asyncio.Task[Any]] = set()
        self._janitor: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "PostgresBroker":
        config = parse_url(url, options, BROKER_OPTIONS)
        return cls(config, namespace=namespace, **config.options)

    def __repr__(self) -> str:
        return f"PostgresBroker({self._config.shown_url!r}, namespace={self.namespace!r})"

    # -- lifecycle ------------------------------------------------------------------

    async def connect(self) -> "PostgresBroker":
        if self._db is not None:
            return self
        await prepare_schema(self._config, lambda conn: migrate(conn, self.schema))
        db = Database(self._config, name=f"stem-{self.namespace}", min_size=DEFAULT_POOL_MIN,
                      max_size=self._pool_size or DEFAULT_POOL_MAX)
        await db.open()
        self._db = db
        self._closed = False
        return self

    async def close(self) -> None:
        self._closed = True
        janitor, self._janitor = self._janitor, None
        if janitor is not None:
            janitor.cancel()
            await asyncio.gather(janitor, return_exceptions=True)
        for subs in (*self._by_queue.values(), *self._by_channel.values()):
            for st in subs:
                st.wake.set()
        for task in list(self._background):
            await asyncio.gather(task, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        for attr in ("_settle_db", "_db"):
            db = getattr(self, attr)
            setattr(self, attr, None)
            if db is not None:
                await db.close()

    def _check_open(self) -> Database:
        if self._closed or self._db is None:
            raise BrokerUnavailable(f"the PostgreSQL broker for {self._config.shown_url} is closed")
        return self._db

    async def _settle_pool(self) -> Database:
        """The ``synchronous_commit=off`` pool for claims and settlements, opened on first use."""
        self._check_open()
        if self._settle_db is None:
            async with self._settle_lock:
                if self._settle_db is None:
                    db = Database(self._config, name=f"stem-{self.namespace}-settle", min_size=DEFAULT_POOL_MIN,
                                  max_size=self._pool_size or DEFAULT_POOL_MAX, settle=True)
                    await db.open()
                    self._settle_db = db
        return self._settle_db

    # -- producing ------------------------------------------------------------------

    async def publish(self, envelope: Envelope, *, queue: str | None = None, priority: int | None = None,
                      connection: psycopg.AsyncConnection | None = None) -> None:
        """Persist one envelope. With ``connection`` (a ``psycopg.AsyncConnection``), insert it
        inside that connection's current transaction: it commits or rolls back with it."""
        routed = self.route(envelope, queue, priority)
        if connection is None:
            await self._publish([routed])
        else:
            await self._publish_on(connection, [routed])

    async def publish_many(self, envelopes: Iterable[Envelope], *,
                           connection: psycopg.AsyncConnection | None = None) -> None:
        """Persist many envelopes in one statement (optionally in the caller's transaction)."""
        batch = [self.route(env) for env in envelopes]
        if not batch:
            return
        if connection is None:
            await self._publish(batch)
        else:
            await self._publish_on(connection, batch)

    def _publish_statement(self, envelopes: list[Envelope]) -> tuple[str, dict[str, Any]]:
        if len(envelopes) == 1:
            return self._q.publish_one, publish_params(envelopes[0])
        return self._q.publish_many, publish_many_params(envelopes)

    async def _publish(self, envelopes: list[Envelope]) -> None:
        db = self._check_open()
        query, params = self._publish_statement(envelopes)
        await db.execute(query, params)

    async def _publish_on(self, connection: psycopg.AsyncConnection, envelopes: list[Envelope]) -> None:
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ValueError(f"connection must be a psycopg.AsyncConnection, got {type(connection).__name__}")
        self._check_open()
        query, params = self._publish_statement(envelopes)
        with translate(self._config):
            await connection.execute(query, params)

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        db = self._check_open()
        q = self._q
        body = envelope.to_json()

        async def go(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute(q.channel_lock, {"key": self._channel_key(channel)})
                await conn.execute(q.broadcast_insert, {"channel": channel, "envelope": body})
                await conn.execute(q.broadcast_cleanup, {"channel": channel, "stale_s": SUBSCRIBER_STALE_S})
                await conn.execute("SELECT pg_notify(%s, %s)", (self.schema + QUEUE_CHANNEL_SUFFIX, "b:" + channel))

        await db.run(go)

    def _channel_key(self, channel: str) -> str:
        return f"{self.schema}:broadcast:{channel}"

    # -- consuming ------------------------------------------------------------------

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
        except BaseException:
            self._forget(sub)
            raise

    async def _janitor_loop(self) -> None:
        """Consumers create the dead rows, so while this broker consumes it keeps them in check."""
        while True:
            await asyncio.sleep(VACUUM_CHECK_S)
            if self._settle_db is not None:
                await janitor_pass(self._settle_db, self.schema, JANITOR_TABLES)

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
        if st is not None and st.channels and self._db is not None and not self._closed:
            try:
                await self._db.execute(self._q.unsubscribe, {"subscription": st.key})
            except BrokerUnavailable:
                pass  # the row goes stale and broadcast cleanup forgets it

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        st: _Sub = sub.state
        deadline = monotonic() + timeout
        while True:
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
            try:
                await asyncio.wait_for(st.wake.wait(), wait)
            except asyncio.TimeoutError:
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
        params = {"queues": queues, "limit": limit, "consumer": sub.consumer, "default_ms": self._default_ms}

        async def go(conn: psycopg.AsyncConnection) -> tuple[Any, list[Any]]:
            if not maintain:
                cur = await conn.execute(q.claim, params)
                return None, await cur.fetchall()
            async with conn.pipeline():
                mcur = await conn.execute(q.maintain, {"queues": queues})
                ccur = await conn.execute(q.claim, params)
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
            "meta": _json({"error": str(envelope.meta.get("error"))}), "envelope": envelope.to_json(),
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

    # -- settling -------------------------------------------------------------------

    async def _settle_args(self, delivery: Delivery) -> tuple[Database, int, int] | None:
        """The pool and ``(row id, lease)`` for a queue delivery; None when there is nothing
        to settle (a broadcast copy, or a receipt that is not ours)."""
        self._check_open()
        if delivery.channel is not None:
            return None
        parsed = parse_receipt(delivery.receipt)
        if parsed is None:
            return None
        return await self._settle_pool(), parsed[0], parsed[1]

    async def _ack(self, delivery: Delivery) -> None:
        args = await self._settle_args(delivery)
        if args is not None:
            db, row_id, lease = args
            await db.execute(self._q.ack, {"id": row_id, "lease": lease})

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        args = await self._settle_args(delivery)
        if args is None:
            return
        db, row_id, lease = args
        if not requeue:
            await db.execute(self._q.drop, {"id": row_id, "lease": lease})
            return
        changes: dict[str, Any] = {"attempt": delivery.envelope.attempt + 1}
        if delay is not None and delay > 0:
            changes["not_before"] = utcnow() + timedelta(seconds=delay)
        env = delivery.envelope.replace(**changes)
        await db.execute(self._q.nack, {
            "id": row_id, "lease": lease, "not_before": env.not_before, "ready_at": ready_at(env),
            "envelope": env.to_json(),
        })

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        args = await self._settle_args(delivery)
        if args is None:
            raise LeaseLost(f"receipt {delivery.receipt!r} does not hold a PostgreSQL lease")
        db, row_id, lease = args
        rows = await db.fetch(self._q.extend, {"id": row_id, "lease": lease, "seconds": seconds})
        if not rows:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        return rows[0][0]

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        args = await self._settle_args(delivery)
        if args is None:
            return
        db, row_id, lease = args
        await db.execute(self._q.dead_letter, {
            "id": row_id, "lease": lease, "msg_id": None, "name": None, "reason": reason,
            "meta": _json(meta), "envelope": None,
        })


def _json(value: Any) -> str:
    return json.dumps(check_json(value, "dead-letter meta"), separators=(",", ":"), ensure_ascii=False)


__all__ = ["PostgresBroker"]
