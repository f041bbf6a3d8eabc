"""Inspecting and repairing queues, and the dead letters: the operator's transactions.

Functions take the connection first and run on the database thread. Actions that change
message states first move due delayed rows and expired leases of the queue back to
ready (``maintain``), so what they change matches what a consumer would claim. Reading
writes nothing and never waits for the write lock (a stopped or hung process may hold
it: the operator must still see): ``queue_stats`` corrects the counters by the few
overdue rows, and ``peek`` / ``page`` read each state as a claim would find it now.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

from ...clock import to_epoch
from ...contract.broker import Broker
from ...contract.cursor import decode_key, encode_key
from ...contract.types import DeadLetterEntry, DeadLetterPage, MessageInfo, MessagePage, QueueStats
from ...envelope import Envelope
from ...settings import PRUNE_BATCH, REPLY_QUEUE_PREFIX, REPLY_QUEUE_TTL_SECONDS
from .db import db_now, immediate, snapshot
from .rows import dead_entry, decode_or_placeholder, job_params, moment
from .schema import Q

# Replay and purge read dead-letter candidates in batches of this many rows.
PICK_BATCH = 200
# ``since`` is pre-filtered in SQL this much early; the exact test is done on the entry,
# so float rounding between datetimes and stored seconds never drops a boundary entry.
SINCE_SLACK_S = 0.001
_NO_SINCE = -1e18

_PEEK = {"pending": Q.peek_pending, "delayed": Q.peek_delayed, "inflight": Q.peek_inflight}
_PEEK_AFTER = {"pending": Q.peek_pending_after, "delayed": Q.peek_delayed_after, "inflight": Q.peek_inflight_after}
# A page cursor is the last row's sort key: pending (priority, ready_at, id), delayed
# (ready_at, id), inflight (locked_until, id).
_KEY_KINDS: dict[str, tuple[type, ...]] = {"pending": (int, float, int), "delayed": (float, int), "inflight": (float, int)}
_KEY_NAMES = {"pending": ("priority", "at", "id"), "delayed": ("at", "id"), "inflight": ("at", "id")}


def maintain(conn: Any, ns: str, queue: str, now: float) -> None:
    params = {"ns": ns, "queues": json.dumps([queue]), "now": now}
    conn.execute(Q.promote_due, params)
    conn.execute(Q.reap_expired, params)


def list_queues(conn: Any, ns: str) -> list[str]:
    return [row[0] for row in conn.execute(Q.list_queues, {"ns": ns})]


def queue_stats(conn: Any, ns: str, queues: list[str]) -> list[QueueStats]:
    out = []
    with snapshot(conn):
        now = db_now(conn)
        for queue in queues:
            params = {"ns": ns, "queue": queue, "now": now}
            row = conn.execute(Q.queue_counts, params).fetchone()
            if row is None:
                out.append(QueueStats(queue, 0, 0, 0, 0, None, 0, 0))
                continue
            ready, delayed, leased, dead, enqueued, completed, due, expired = row
            pending = ready + due + expired
            oldest = conn.execute(Q.oldest_pending, params).fetchone()[0] if pending > 0 else None
            out.append(
                QueueStats(
                    queue=queue,
                    pending=pending,
                    delayed=max(0, delayed - due),
                    inflight=max(0, leased - expired),
                    dead=dead,
                    oldest_pending_age=max(0.0, now - oldest) if oldest is not None else None,
                    enqueued_total=enqueued,
                    completed_total=completed,
                )
            )
    return out


def peek(conn: Any, ns: str, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
    with snapshot(conn):
        params = {"ns": ns, "queue": queue, "limit": limit, "offset": offset, "now": db_now(conn)}
        rows = conn.execute(_PEEK[state], params).fetchall()
    return [_info(row, state) for row in rows]


def page_after(cursor: str | None, state: str) -> tuple[Any, ...] | None:
    """The key a page cursor names (checked: ``ValueError`` for anything ``page`` did not
    hand out for this state), or None for the first page."""
    return None if cursor is None else decode_key(cursor, state, _KEY_KINDS[state])


def page(conn: Any, ns: str, queue: str, state: str, limit: int, after: tuple[Any, ...] | None) -> MessagePage:
    """``limit`` (at least 1) messages after the key ``after`` (``page_after``; None: from
    the first), read by index seeks past it (no OFFSET), and the next page's cursor (None
    at the end)."""
    params: dict[str, Any] = {"ns": ns, "queue": queue, "limit": limit + 1, "offset": 0}
    query = _PEEK[state]
    if after is not None:
        params.update(zip(_KEY_NAMES[state], after))
        query = _PEEK_AFTER[state]
    with snapshot(conn):
        params["now"] = db_now(conn)
        rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        row_id, _mid, _q, _raw, _holder, until, _count, priority, ready_at = rows[-1]
        if state == "pending":
            key: tuple[Any, ...] = (int(priority), float(ready_at), int(row_id))
        else:
            key = (float(until if state == "inflight" else ready_at), int(row_id))
        next_cursor = encode_key(state, key)
    return MessagePage(messages=[_info(row, state) for row in rows], next_cursor=next_cursor)


def _info(row: tuple[Any, ...], state: str) -> MessageInfo:
    row_id, msg_id, row_queue, raw, holder, until, count = row[:7]
    envelope, _ = decode_or_placeholder(row_id, msg_id, row_queue, raw)
    leased = state == "inflight"
    return MessageInfo(
        envelope=envelope,
        state=state,
        lease_holder=holder if leased else None,
        lease_expires_at=moment(until) if leased else None,
        delivery_count=int(count),
    )


def requeue(conn: Any, ns: str, queue: str, ids: set[str]) -> int:
    """Leased or delayed messages become ready now; a leased one's holder is fenced off."""
    params = {"ns": ns, "queue": queue, "ids": json.dumps(sorted(ids))}
    with immediate(conn):
        now = db_now(conn)
        maintain(conn, ns, queue, now)
        changed = conn.execute(Q.requeue_leased, params).rowcount
        for row_id, raw in conn.execute(Q.delayed_by_ids, params).fetchall():
            envelope, error = decode_or_placeholder(row_id, None, queue, raw)
            # Ready from now: its age (and its place among equals) starts now.
            text = raw if error is not None else Broker.ready_now_envelope(envelope, moment(now)).to_json()
            changed += conn.execute(Q.make_ready_now, {"id": row_id, "now": now, "envelope": text}).rowcount
    return changed


def remove(conn: Any, ns: str, queue: str, ids: set[str]) -> int:
    with immediate(conn):
        return conn.execute(Q.remove_ids, {"ns": ns, "queue": queue, "ids": json.dumps(sorted(ids))}).rowcount


def purge(conn: Any, ns: str, queue: str) -> int:
    with immediate(conn):
        maintain(conn, ns, queue, db_now(conn))
        count = conn.execute(Q.purge_queue, {"ns": ns, "queue": queue}).rowcount
        if queue.startswith(REPLY_QUEUE_PREFIX):
            # A control reply queue is used once: nothing of it stays (rows, counters).
            conn.execute(Q.drop_queue_jobs, {"ns": ns, "queue": queue})
            conn.execute(Q.drop_queue_counts, {"ns": ns, "queue": queue})
            # And what late replies left in reply queues purged before (bounded).
            stale = {"ns": ns, "prefix": REPLY_QUEUE_PREFIX, "batch": PRUNE_BATCH,
                     "before": db_now(conn) - REPLY_QUEUE_TTL_SECONDS}
            conn.execute(Q.stale_reply_jobs, stale)
            conn.execute(Q.stale_reply_counts, stale)
        return count


# -- dead letters ------------------------------------------------------------------


def dead_page(conn: Any, ns: str, queue: str, limit: int, offset: int) -> DeadLetterPage:
    if limit == 0:
        return DeadLetterPage(entries=[], next_offset=None)
    rows = conn.execute(Q.dead_page, {"ns": ns, "queue": queue, "limit": limit + 1, "offset": offset}).fetchall()
    entries = [dead_entry(row, queue) for row in rows[:limit]]
    return DeadLetterPage(entries=entries, next_offset=offset + limit if len(rows) > limit else None)


def dead_get(conn: Any, ns: str, queue: str, msg_id: str) -> DeadLetterEntry | None:
    row = conn.execute(Q.dead_get, {"ns": ns, "queue": queue, "msg_id": msg_id}).fetchone()
    return dead_entry(row, queue) if row is not None else None


def _pick(
    conn: Any,
    ns: str,
    queue: str,
    *,
    limit: int | None,
    since: datetime | None,
    ids: set[str] | None,
    task: str | None,
    accept: Callable[[DeadLetterEntry], bool],
) -> list[tuple[int, DeadLetterEntry]]:
    """Matching dead letters, oldest first, at most ``limit``."""
    params = {
        "ns": ns,
        "queue": queue,
        "since": to_epoch(since) - SINCE_SLACK_S if since is not None else _NO_SINCE,
        "task": task,
        "ids": json.dumps(sorted(ids)) if ids is not None else None,
        "limit": PICK_BATCH,
        "offset": 0,
    }
    picked: list[tuple[int, DeadLetterEntry]] = []
    while limit is None or len(picked) < limit:
        rows = conn.execute(Q.dead_oldest, params).fetchall()
        for row in rows:
            entry = dead_entry(row, queue)
            if accept(entry):
                picked.append((int(row[0]), entry))
                if limit is not None and len(picked) >= limit:
                    break
        if len(rows) < PICK_BATCH:
            break
        params["offset"] += len(rows)
    return picked


def replay(
    conn: Any,
    ns: str,
    queue: str,
    *,
    limit: int,
    since: datetime | None,
    ids: set[str] | None,
    task: str | None,
    dry_run: bool,
    accept: Callable[[DeadLetterEntry], bool],
    rebuild: Callable[[Envelope], Envelope],
) -> list[DeadLetterEntry]:
    """Move matching dead letters (oldest first) back onto ``queue`` in one transaction."""
    if limit == 0:
        return []
    if dry_run:
        with snapshot(conn):
            return [e for _, e in _pick(conn, ns, queue, limit=limit, since=since, ids=ids, task=task, accept=accept)]
    with immediate(conn):
        picked = _pick(conn, ns, queue, limit=limit, since=since, ids=ids, task=task, accept=accept)
        if picked:
            now = db_now(conn)
            conn.execute(Q.dead_delete, {"ids": json.dumps([row_id for row_id, _ in picked])})
            conn.executemany(Q.publish, [job_params(ns, rebuild(entry.envelope), now) for _, entry in picked])
    return [entry for _, entry in picked]


def purge_dead(
    conn: Any, ns: str, queue: str, *, since: datetime | None, limit: int | None, accept: Callable[[DeadLetterEntry], bool]
) -> int:
    with immediate(conn):
        picked = _pick(conn, ns, queue, limit=limit, since=since, ids=None, task=None, accept=accept)
        if picked:
            conn.execute(Q.dead_delete, {"ids": json.dumps([row_id for row_id, _ in picked])})
    return len(picked)


__all__ = ["dead_get", "dead_page", "list_queues", "maintain", "page", "page_after", "peek", "purge", "purge_dead", "queue_stats", "remove", "replay", "requeue"]
