"""Producing, claiming and settling: the transactions of the hot path.

Every function here takes the connection first and runs on the database thread, as one
hop (``SQLiteDatabase.run``); writes happen inside ``immediate(conn)``. A receipt is
``"<row id>:<token>"``; the token fences every settle (see migrations/0001_broker.sql).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ...envelope import Envelope
from ...errors import InvalidEnvelope
from ...settings import PRUNE_BATCH
from . import store
from .broadcasts import read_broadcasts, sweep, touch
from .db import db_now, immediate, snapshot
from .rows import INVALID_REASON, decode_or_placeholder, dumps, job_params
from .schema import Q


@dataclass(frozen=True, slots=True)
class Claimed:
    """One row this claim leased."""

    row_id: int
    token: int
    delivery_count: int
    locked_until: float
    queue: str
    envelope: Envelope

    @property
    def receipt(self) -> str:
        return f"{self.row_id}:{self.token}"


@dataclass(frozen=True, slots=True)
class StepRequest:
    """What one ``_receive`` round asks of the database."""

    ns: str
    queues: tuple[str, ...]
    limit: int
    consumer: str
    default_ms: int
    subscription: str
    cursors: dict[str, int]
    # Dead letters older than this (seconds) are pruned when one is written.
    dead_letter_retention: float
    touch: bool = False
    sweep: bool = False
    # Look (read-only) before taking the write lock; set after rounds that found nothing,
    # so commits by others to unrelated queues cost no write transaction.
    precheck: bool = False


@dataclass(slots=True)
class StepResult:
    claimed: list[Claimed] = field(default_factory=list)
    broadcasts: list[tuple[int, str, Envelope]] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    # Seconds (database clock) until the next delayed row or lease of these queues falls
    # due; None when nothing is waiting or when rows were claimed.
    next_due_in: float | None = None
    # The claim changed something besides the rows it returned (invalid rows buried).
    buried: int = 0
    # A channel had more broadcasts waiting than one round reads.
    more: bool = False


def parse_receipt(receipt: str) -> tuple[int, int] | None:
    """``(row id, token)``, or None for a receipt this broker never issued."""
    head, sep, tail = receipt.partition(":")
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return int(head), int(tail)


# -- producing ---------------------------------------------------------------------


def publish(conn: Any, ns: str, envelopes: list[Envelope]) -> None:
    """All envelopes in one transaction (all or nothing)."""
    enqueue(conn, ns, envelopes, None)


def enqueue(conn: Any, ns: str, envelopes: list[Envelope], statuses: store.StatusWrites | None) -> None:
    """``statuses`` (``(backend namespace, writes, cleanup)``, see ``store.put_statuses``),
    then the envelopes, in one transaction (all or nothing)."""
    encoded = [job_params(ns, env, 0.0) for env in envelopes]
    with immediate(conn):
        now = db_now(conn)
        if statuses is not None:
            store.put_statuses(conn, *statuses, now)
        for params in encoded:
            params["now"] = now
        conn.executemany(Q.publish, encoded)


# -- claiming ----------------------------------------------------------------------


def receive_step(conn: Any, req: StepRequest) -> StepResult:
    """Claim up to ``req.limit`` rows and read new broadcasts, in one transaction when it
    writes; a broadcast-only look with nothing to persist takes no write lock."""
    if req.limit <= 0 and not req.touch:
        result = StepResult()
        result.broadcasts, result.cursors, result.more = read_broadcasts(conn, req.ns, req.cursors)
        return result
    if req.precheck and not req.touch:
        # Inside a group commit too: the look is cheaper than promote/reap/claim statements.
        with snapshot(conn):
            now = db_now(conn)
            if not _claimable(conn, req, now):
                result = StepResult(next_due_in=_next_due(conn, req, now))
                result.broadcasts, result.cursors, result.more = read_broadcasts(conn, req.ns, req.cursors)
                return result
    with immediate(conn):
        now = db_now(conn)
        result = StepResult()
        if req.limit > 0:
            result.claimed, result.buried = _claim(conn, req, now)
            if not result.claimed and not result.buried:
                result.next_due_in = _next_due(conn, req, now)
        result.broadcasts, result.cursors, result.more = read_broadcasts(conn, req.ns, req.cursors)
        if req.touch:
            touch(conn, req.ns, req.subscription, req.consumer, result.cursors, now)
        if req.sweep:
            sweep(conn, req.ns, now)
    return result


def _claim(conn: Any, req: StepRequest, now: float) -> tuple[list[Claimed], int]:
    base = {"ns": req.ns, "queues": json.dumps(req.queues), "now": now}
    conn.execute(Q.promote_due, base)
    conn.execute(Q.reap_expired, base)
    heads: list[tuple[int, int, float]] = []
    for queue in req.queues:
        heads.extend(conn.execute(Q.ready_head, {"ns": req.ns, "queue": queue, "limit": req.limit}).fetchall())
    if not heads:
        return [], 0
    if len(req.queues) > 1:
        # Each queue's rows come in index order; merge them: priority, then age, then publish order.
        heads.sort(key=lambda row: (-row[1], row[2], row[0]))
    ids = [row[0] for row in heads[: req.limit]]
    rows = conn.execute(
        Q.lease_rows, {"ids": json.dumps(ids), "consumer": req.consumer, "now": now, "default_ms": req.default_ms}
    ).fetchall()
    order = {row_id: index for index, row_id in enumerate(ids)}
    rows.sort(key=lambda row: order[row[0]])
    claimed: list[Claimed] = []
    buried = 0
    for row_id, token, count, until, queue, msg_id, raw in rows:
        envelope, error = decode_or_placeholder(row_id, msg_id, queue, raw)
        if error is not None:
            conn.execute(Q.delete_job, {"id": row_id})
            bury(conn, req.ns, queue, envelope, INVALID_REASON, {"error": error}, req.dead_letter_retention)
            buried += 1
            continue
        claimed.append(Claimed(row_id, token, count, float(until), queue, envelope))
    return claimed, buried


def _claimable(conn: Any, req: StepRequest, now: float) -> bool:
    return any(
        conn.execute(Q.claimable, {"ns": req.ns, "queue": queue, "now": now}).fetchone()[0] for queue in req.queues
    )


def _next_due(conn: Any, req: StepRequest, now: float) -> float | None:
    due: float | None = None
    for queue in req.queues:
        params = {"ns": req.ns, "queue": queue}
        for query in (Q.next_delayed, Q.next_expiry):
            row = conn.execute(query, params).fetchone()
            if row is not None and row[0] is not None and (due is None or row[0] < due):
                due = float(row[0])
    return None if due is None else max(0.0, due - now)


def unlease(conn: Any, claimed: list[tuple[int, int]]) -> None:
    """Give back rows leased by a claim whose caller was cancelled before seeing them."""
    with immediate(conn):
        conn.executemany(Q.unlease, [{"id": row_id, "token": token} for row_id, token in claimed])


# -- settling ----------------------------------------------------------------------


def ack(conn: Any, row_id: int, token: int, statuses: store.StatusWrites | None = None) -> bool:
    """Delete the row this receipt holds; False when it no longer holds it (fenced).
    ``statuses`` (as for ``enqueue``) are written first in the same transaction, fenced
    or not: a stale holder's final status is still stored, as set_status-then-ack does."""
    with immediate(conn):
        if statuses is not None:
            store.put_statuses(conn, *statuses, db_now(conn))
        row = conn.execute(Q.ack, {"id": row_id, "token": token}).fetchone()
        if row is None:
            return False
        conn.execute(Q.count_completed, {"ns": row[0], "queue": row[1]})
    return True


def nack(conn: Any, row_id: int, token: int, envelope: Envelope | None) -> bool:
    """Requeue as ``envelope`` (the caller's attempt + 1 copy), or drop when it is None."""
    with immediate(conn):
        if envelope is None:
            return conn.execute(Q.nack_drop, {"id": row_id, "token": token}).rowcount > 0
        params = job_params("", envelope, db_now(conn))
        params.update(id=row_id, token=token)
        return conn.execute(Q.nack_requeue, params).rowcount > 0


def extend(conn: Any, row_id: int, token: int, seconds: float) -> float | None:
    """The new ``locked_until``, or None when the receipt no longer holds the row."""
    with immediate(conn):
        row = conn.execute(Q.extend_lease, {"id": row_id, "token": token, "seconds": seconds, "now": db_now(conn)}).fetchone()
    return float(row[0]) if row is not None else None


def dead_letter(conn: Any, ns: str, row_id: int, token: int, reason: str, meta: dict[str, Any],
                retention: float) -> bool:
    with immediate(conn):
        row = conn.execute(Q.take_job, {"id": row_id, "token": token}).fetchone()
        if row is None:
            return False
        queue, msg_id, _name, raw = row
        envelope, error = decode_or_placeholder(row_id, msg_id, queue, raw)
        if error is not None:
            meta = {**meta, "error": error}
        bury(conn, ns, queue, envelope, reason, meta, retention)
    return True


def bury(conn: Any, ns: str, queue: str, envelope: Envelope, reason: str, meta: dict[str, Any],
         retention: float) -> None:
    """Keep one dead letter per (queue, id): a newer one replaces (and renews) the old;
    then delete at most ``PRUNE_BATCH`` of the queue's dead letters older than
    ``retention`` seconds (oldest first, on the ``dead_letters_age`` index).

    ``dead_at`` is the wall clock with microseconds, not the database's clock: SQLite's
    has milliseconds only, and entries dead-lettered within one millisecond must keep
    their order for ``since`` filters (which callers give on the same wall clock)."""
    try:
        meta_text = dumps(meta)
    except (TypeError, ValueError) as exc:
        raise InvalidEnvelope(f"dead-letter meta is not JSON-serialisable: {exc}") from None
    conn.execute(Q.dead_unlink, {"ns": ns, "queue": queue, "msg_id": envelope.id})
    now = time.time()
    conn.execute(
        Q.dead_insert,
        {
            "ns": ns,
            "queue": queue,
            "msg_id": envelope.id,
            "name": envelope.name,
            "reason": reason,
            "meta": meta_text,
            "envelope": envelope.to_json(),
            "now": now,
        },
    )
    conn.execute(Q.dead_prune, {"ns": ns, "queue": queue, "before": now - retention, "batch": PRUNE_BATCH})


__all__ = [
    "Claimed",
    "StepRequest",
    "StepResult",
    "ack",
    "bury",
    "dead_letter",
    "enqueue",
    "extend",
    "nack",
    "parse_receipt",
    "publish",
    "receive_step",
    "unlease",
]
