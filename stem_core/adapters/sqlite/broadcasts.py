"""Persisted broadcasts: every subscriber at publish time gets a copy, in any process.

A subscription registers one ``subscribers`` row per channel whose cursor starts at the
highest broadcast id ever assigned, so it sees only what is published after it joined.
The cursor that decides delivery lives in the subscription's memory; the row's copy is
written back every ``SUBSCRIBER_TOUCH_S`` together with ``seen_at``. It may lag, never
lead, so the sweep, which deletes rows every live subscriber has passed, never deletes a
row someone still has to read. Subscribers not seen for ``SUBSCRIBER_STALE_S`` (their
process died) are dropped by the same sweep, so they no longer hold rows back.

Functions take the connection first and run on the database thread.
"""

from __future__ import annotations

from typing import Any

from ...envelope import Envelope
from ...errors import InvalidEnvelope
from .db import db_now, immediate
from .schema import Q

# A live subscription writes its cursor and seen_at back this often.
SUBSCRIBER_TOUCH_S = 10.0
# A subscriber not seen for this long is dead; broadcasts no longer wait for it.
SUBSCRIBER_STALE_S = 300.0
# Consumers sweep read broadcasts and dead subscribers this often.
SWEEP_INTERVAL_S = 30.0
# One receive round reads at most this many broadcasts per channel.
BROADCAST_BATCH = 500


def subscribe(conn: Any, ns: str, subscription: str, consumer: str, channels: tuple[str, ...]) -> dict[str, int]:
    """Register the subscription on ``channels``; returns the starting cursors."""
    with immediate(conn):
        now = db_now(conn)
        head = int(conn.execute(Q.broadcast_head).fetchone()[0])
        for channel in channels:
            conn.execute(
                Q.subscribe,
                {"ns": ns, "subscription": subscription, "channel": channel, "consumer": consumer, "cursor": head, "now": now},
            )
    return {channel: head for channel in channels}


def unsubscribe(conn: Any, ns: str, subscription: str) -> None:
    with immediate(conn):
        conn.execute(Q.unsubscribe, {"ns": ns, "subscription": subscription})


def publish(conn: Any, ns: str, channel: str, envelope_json: str) -> bool:
    """Store one broadcast; False (nothing stored) when nobody listens on ``channel``."""
    with immediate(conn):
        now = db_now(conn)
        live = conn.execute(Q.has_subscribers, {"ns": ns, "channel": channel, "stale_before": now - SUBSCRIBER_STALE_S}).fetchone()[0]
        if not live:
            return False
        conn.execute(Q.broadcast_insert, {"ns": ns, "channel": channel, "envelope": envelope_json, "now": now})
    return True


def read_broadcasts(conn: Any, ns: str, cursors: dict[str, int]) -> tuple[list[tuple[int, str, Envelope]], dict[str, int], bool]:
    """New broadcasts past each cursor (oldest first), the advanced cursors, and whether
    a channel had more than one batch waiting. Rows that do not decode are skipped: a
    broadcast has no dead-letter queue."""
    out: list[tuple[int, str, Envelope]] = []
    advanced = dict(cursors)
    more = False
    for channel, cursor in cursors.items():
        rows = conn.execute(
            Q.broadcast_read, {"ns": ns, "channel": channel, "cursor": cursor, "limit": BROADCAST_BATCH}
        ).fetchall()
        for row_id, raw in rows:
            try:
                out.append((row_id, channel, Envelope.from_json(raw)))
            except (InvalidEnvelope, TypeError):
                continue
        if rows:
            advanced[channel] = int(rows[-1][0])
        more = more or len(rows) >= BROADCAST_BATCH
    if len(cursors) > 1:
        out.sort(key=lambda item: item[0])
    return out, advanced, more


def touch(conn: Any, ns: str, subscription: str, consumer: str, cursors: dict[str, int], now: float) -> None:
    """Write cursors and ``seen_at`` back; re-register if a sweep took us for dead."""
    for channel, cursor in cursors.items():
        params = {"ns": ns, "subscription": subscription, "channel": channel, "cursor": cursor, "now": now}
        if conn.execute(Q.subscriber_touch, params).rowcount == 0:
            conn.execute(Q.subscribe, {**params, "consumer": consumer})


def sweep(conn: Any, ns: str, now: float) -> None:
    """Drop dead subscribers, then broadcasts every remaining subscriber has read."""
    conn.execute(Q.subscribers_stale, {"ns": ns, "stale_before": now - SUBSCRIBER_STALE_S})
    conn.execute(Q.broadcasts_trim, {"ns": ns})


__all__ = [
    "BROADCAST_BATCH",
    "SUBSCRIBER_STALE_S",
    "SUBSCRIBER_TOUCH_S",
    "SWEEP_INTERVAL_S",
    "publish",
    "read_broadcasts",
    "subscribe",
    "sweep",
    "touch",
    "unsubscribe",
]
