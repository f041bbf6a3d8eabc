"""Broadcast channels of the PostgreSQL broker: publishing, and each subscriber's reading.

A broadcast is a row in ``broadcasts``; every subscriber has a cursor row per channel in
``subscribers`` (the last id it read), which starts at the newest broadcast when it
subscribes, so it gets the broadcasts published from then on and none before.
Publishing and subscribing hold the channel's advisory lock until commit, so broadcast
ids commit in id order and a new cursor is exact. The transaction of a broadcast also
deletes the rows every cursor has passed, and forgets cursors silent for
``SUBSCRIBER_STALE_S`` (a crashed process must not pin rows forever).
"""

from __future__ import annotations

import logging

import psycopg

from ...clock import monotonic
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable
from .connection import QUEUE_CHANNEL_SUFFIX, PostgresConnection
from .rows import decode
from .sql import Queries
from .subscription import PostgresSubscription

log = logging.getLogger(__name__)

# Broadcast copies are read when a NOTIFY says so, and at least this often.
BROADCAST_POLL_S = 2.0
BROADCAST_READ_LIMIT = 1000
# Subscribers refresh ``seen_at`` this often; ones silent for SUBSCRIBER_STALE_S are
# forgotten (a crashed process must not pin broadcast rows forever).
SUBSCRIBER_TOUCH_S = 30.0
SUBSCRIBER_STALE_S = 300.0


class PostgresChannels:
    """Broadcast publish, subscriber cursors, and the reads ``PostgresConsumer.receive`` does."""

    def __init__(self, connection: PostgresConnection, queries: Queries) -> None:
        self._connection = connection
        self._q = queries

    def _lock_key(self, channel: str) -> str:
        return f"{self._connection.schema}:broadcast:{channel}"

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        db = self._connection.durable()
        q = self._q
        body = envelope.to_json()
        notify_channel = self._connection.schema + QUEUE_CHANNEL_SUFFIX

        async def go(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute(q.channel_lock, {"key": self._lock_key(channel)})
                await conn.execute(q.broadcast_insert, {"channel": channel, "envelope": body})
                await conn.execute(q.broadcast_cleanup, {"channel": channel, "stale_s": SUBSCRIBER_STALE_S})
                await conn.execute("SELECT pg_notify(%s, %s)", (notify_channel, "b:" + channel))

        await db.run(go)

    async def subscribe(self, st: PostgresSubscription, consumer: str) -> None:
        """Start ``st``'s cursors on its channels at the newest broadcast."""
        q = self._q

        async def go(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                for channel in sorted(st.channels):
                    await conn.execute(q.channel_lock, {"key": self._lock_key(channel)})
                    await conn.execute(q.subscribe, {"subscription": st.key, "channel": channel, "consumer": consumer[:200]})

        await self._connection.durable().run(go)
        st.last_touch = monotonic()

    async def unsubscribe(self, st: PostgresSubscription) -> None:
        if not st.channels or not self._connection.is_open:
            return
        try:
            await self._connection.durable().execute(self._q.unsubscribe, {"subscription": st.key})
        except BrokerUnavailable:
            pass  # the row goes stale and broadcast cleanup forgets it

    async def receive(self, st: PostgresSubscription, consumer: str, now: float) -> list[Delivery]:
        """The broadcasts due to ``st`` when a NOTIFY said so or ``BROADCAST_POLL_S`` passed;
        its cursor rows are kept alive on the way."""
        if now - st.last_touch >= SUBSCRIBER_TOUCH_S:
            await self._touch(st, consumer)
        if not (st.broadcast_dirty or now - st.last_broadcast >= BROADCAST_POLL_S):
            return []
        st.broadcast_dirty = False
        st.last_broadcast = now
        return await self._read(st)

    async def _read(self, st: PostgresSubscription) -> list[Delivery]:
        rows = await self._connection.durable().fetch(self._q.broadcast_read,
                                                      {"subscription": st.key, "limit": BROADCAST_READ_LIMIT})
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

    async def _touch(self, st: PostgresSubscription, consumer: str) -> None:
        st.last_touch = monotonic()
        if not await self._connection.durable().execute(self._q.touch_subscription, {"subscription": st.key}):
            # Forgotten as stale (this process stalled for minutes): subscribe again from now.
            await self.subscribe(st, consumer)


__all__ = ["BROADCAST_POLL_S", "PostgresChannels", "SUBSCRIBER_STALE_S", "SUBSCRIBER_TOUCH_S"]
