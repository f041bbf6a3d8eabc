"""``RedisChannels``: broadcast channels, one stream per channel, one group per subscription.

A subscription creates its own consumer group at the stream's end (``bc_open.lua``), so
it receives every broadcast published while it exists, in every process. Reads use
``NOACK`` (a broadcast copy needs no settling). Subscribers record that they are alive
in a ZSET; publishing destroys the groups of subscribers silent for
``SUBSCRIBER_STALE_S`` and trims what every remaining group has read, and the stream is
capped at ``BACKLOG_LIMIT`` entries for a subscriber that stops reading (as the memory
broker caps its inbox). An idle consumer's ``XREAD BLOCK`` (``consume.py``) also
watches each channel's stream from its cursor, so a broadcast wakes it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ...clock import monotonic
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable
from .codec import decode, text
from .connection import RedisConnection
from .keys import channel_keys

log = logging.getLogger("stem.redis")

# A subscriber that has not read for this long is gone; its group is destroyed.
SUBSCRIBER_STALE_S = 300.0
# A live subscriber records itself this often (every read would be one write too many).
SUBSCRIBER_TOUCH_S = 10.0
# Broadcast copies kept for a subscriber that stopped reading (oldest dropped first).
BACKLOG_LIMIT = 10_000
# Broadcasts read per channel per receive.
READ_COUNT = 100


class RedisChannelSubscription:
    """One subscription's broadcast groups and read cursors."""

    __slots__ = ("group", "channels", "entries", "touched")

    def __init__(self, consumer: str, channels: tuple[str, ...]) -> None:
        self.group = f"{consumer}#{os.urandom(4).hex()}"
        self.channels = channels
        # channel -> [stream key, subs key, group, cursor], filled as each group is made
        # (so closing after a failed open still destroys the groups already made).
        self.entries: dict[str, list[Any]] = {}
        self.touched = 0.0


class RedisChannels:
    """Broadcast publishing and per-subscription broadcast reading of one namespace."""

    def __init__(self, conn: RedisConnection, namespace: str) -> None:
        self._conn = conn
        self._namespace = namespace

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        keys = channel_keys(self._namespace, channel)
        await self._conn.call("bc_publish", keys, [envelope.to_json(), int(SUBSCRIBER_STALE_S * 1000), BACKLOG_LIMIT])

    async def open(self, state: RedisChannelSubscription) -> None:
        for channel in state.channels:
            stream, subs = channel_keys(self._namespace, channel)
            cursor = await self._conn.call("bc_open", (stream, subs), [state.group])
            state.entries[channel] = [stream, subs, state.group, cursor]

    async def close(self, state: RedisChannelSubscription) -> None:
        for stream, subs, group, _ in state.entries.values():
            try:
                await self._conn.call("bc_close", (stream, subs), [group])
            except BrokerUnavailable:
                pass  # the group is reaped once it has been silent for SUBSCRIBER_STALE_S

    @staticmethod
    def cursors(state: RedisChannelSubscription) -> dict[str, Any]:
        """Each channel stream's last read id, for a blocking ``XREAD``."""
        return {entry[0]: entry[3] for entry in state.entries.values()}

    async def read(self, state: RedisChannelSubscription) -> list[Delivery]:
        now = monotonic()
        touch = now - state.touched >= SUBSCRIBER_TOUCH_S
        out: list[Delivery] = []
        for channel, entry in state.entries.items():
            stream, subs, group, _ = entry
            reply = await self._conn.call("bc_read", (stream, subs), [group, READ_COUNT, 1 if touch else 0])
            if reply[0] == 0:
                # Redis lost the group (restart without persistence, or reaped as stale).
                log.warning("broadcast subscription to %s was lost; subscribing again from now", channel)
                entry[3] = await self._conn.call("bc_open", (stream, subs), [group])
                continue
            for k in range(1, len(reply), 2):
                eid = text(reply[k])
                envelope, ok = decode(reply[k + 1], eid, channel)
                entry[3] = eid
                if not ok:
                    log.warning("skipping an undecodable broadcast on channel %s: %s", channel, envelope.meta.get("error"))
                    continue
                out.append(Delivery(envelope=envelope, receipt=f"b|{channel}|{eid}", queue=channel, channel=channel))
        if touch:
            state.touched = now
        return out


__all__ = ["BACKLOG_LIMIT", "RedisChannelSubscription", "RedisChannels", "SUBSCRIBER_STALE_S"]
