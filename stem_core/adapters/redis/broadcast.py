"""Broadcast channels of ``RedisBroker``: one stream per channel, one group per subscription.

A subscription creates its own consumer group at the stream's end (``bc_open.lua``), so
it receives every broadcast published while it exists, in every process. Reads use
``NOACK`` (a broadcast copy needs no settling). Subscribers record that they are alive
in a ZSET; publishing destroys the groups of subscribers silent for
``SUBSCRIBER_STALE_S`` and trims what every remaining group has read, and the stream is
capped at ``BACKLOG_LIMIT`` entries for a subscriber that stops reading (as the memory
broker caps its inbox).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ...clock import monotonic
from ...contract.broker import Subscription
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable
from .codec import decode, text
from .keys import channel_keys

if TYPE_CHECKING:
    from .broker import _SubState
    from .connection import Connection

log = logging.getLogger("stem.redis")

# A subscriber that has not read for this long is gone; its group is destroyed.
SUBSCRIBER_STALE_S = 300.0
# A live subscriber records itself this often (every read would be one write too many).
SUBSCRIBER_TOUCH_S = 10.0
# Broadcast copies kept for a subscriber that stopped reading (oldest dropped first).
BACKLOG_LIMIT = 10_000
# Broadcasts read per channel per receive.
READ_COUNT = 100


class BroadcastMixin:
    """The broadcast half of ``RedisBroker`` (it provides ``_conn``, ``_run``, ``namespace``)."""

    namespace: str
    _conn: "Connection"
    _run: Callable[..., Awaitable[Any]]

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        keys = channel_keys(self.namespace, channel)
        await self._run("bc_publish", keys, [envelope.to_json(), int(SUBSCRIBER_STALE_S * 1000), BACKLOG_LIMIT])

    async def _open_channels(self, sub: Subscription, state: "_SubState") -> None:
        group = f"{sub.consumer}#{os.urandom(4).hex()}"
        for channel in sub.channels:
            stream, subs = channel_keys(self.namespace, channel)
            cursor = await self._run("bc_open", (stream, subs), [group])
            state.channels[channel] = [stream, subs, group, cursor]

    async def _close_channels(self, sub: Subscription, state: "_SubState") -> None:
        for stream, subs, group, _ in state.channels.values():
            try:
                await self._run("bc_close", (stream, subs), [group])
            except BrokerUnavailable:
                pass  # the group is reaped once it has been silent for SUBSCRIBER_STALE_S

    def _channel_cursors(self, state: "_SubState") -> dict[str, Any]:
        return {entry[0]: entry[3] for entry in state.channels.values()}

    async def _read_channels(self, sub: Subscription, state: "_SubState") -> list[Delivery]:
        now = monotonic()
        touch = now - state.touched >= SUBSCRIBER_TOUCH_S
        out: list[Delivery] = []
        for channel, entry in state.channels.items():
            stream, subs, group, _ = entry
            reply = await self._run("bc_read", (stream, subs), [group, READ_COUNT, 1 if touch else 0])
            if reply[0] == 0:
                # Redis lost the group (restart without persistence, or reaped as stale).
                log.warning("broadcast subscription to %s was lost; subscribing again from now", channel)
                entry[3] = await self._run("bc_open", (stream, subs), [group])
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


__all__ = ["BACKLOG_LIMIT", "BroadcastMixin", "SUBSCRIBER_STALE_S"]
