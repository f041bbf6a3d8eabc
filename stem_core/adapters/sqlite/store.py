"""The result backend's transactions (tables: migrations/0002_results.sql, 0003_status_events_cheaper.sql).

Functions take the connection first and run on the database thread. Values are stored
as JSON text; expiry is compared with the database's clock, so expired rows are invisible
at once and merely deleted later by ``cleanup``, which rides along with ordinary writes
when the backend's ``SweepSchedule`` says it is due.
"""

from __future__ import annotations

import json
from typing import Any

from ...clock import SweepSchedule
from ...contract.backend import StatusWrite
from ...contract.types import TaskState, TaskStatus, WorkerHeartbeat, decode_heartbeat
from ...settings import AUDIT_PRUNE_BATCH, PRUNE_BATCH
from .db import db_now, immediate, snapshot
from .rows import dumps, moment
from .schema import Q

# Watchers must read a change within this long, or they may miss intermediate states.
EVENT_RETENTION_S = 3600.0
# A watcher reads at most this many change-log rows per round.
EVENT_BATCH = 500

# list_statuses: each filter is an equality on an indexed column and the order walks
# that index backwards; the text is assembled from these fixed fragments only.
_LIST_BASE = "SELECT body FROM statuses WHERE ns = :ns AND expires_at > :now"
_LIST_FILTERS = (("state", " AND state = :state"), ("queue", " AND queue = :queue"), ("task", " AND task = :task"))
_LIST_ORDER = " ORDER BY seq DESC LIMIT :limit OFFSET :offset"


# Status writes riding along in a broker transaction (``put_statuses``'s arguments):
# (the backend's namespace, the writes, the cleanup to run too when one is due).
StatusWrites = tuple[str, list[StatusWrite], SweepSchedule | None]


def _column(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def decode_status(body: str) -> TaskStatus:
    return TaskStatus.from_dict(json.loads(body))


def set_status(conn: Any, ns: str, write: StatusWrite, clean: SweepSchedule | None) -> TaskStatus:
    """Store one status in its own transaction; returns it as stored."""
    with immediate(conn):
        now = db_now(conn)
        body = put_status(conn, ns, write, now)
        run_cleanup(conn, clean, now)
    return decode_status(body)


def set_statuses(conn: Any, ns: str, writes: list[StatusWrite], clean: SweepSchedule | None) -> None:
    """Store many statuses in one transaction (all or nothing)."""
    with immediate(conn):
        put_statuses(conn, ns, writes, clean, db_now(conn))


def put_statuses(conn: Any, ns: str, writes: list[StatusWrite], clean: SweepSchedule | None, now: float) -> None:
    """``put_status`` for each write (and a ``cleanup`` when one is due), inside the caller's
    transaction: the status half of the broker's ``enqueue`` and ``ack_with`` too."""
    for write in writes:
        put_status(conn, ns, write, now)
    run_cleanup(conn, clean, now)


def put_status(conn: Any, ns: str, write: StatusWrite, now: float) -> str:
    """Store one status inside the caller's transaction, at ``now`` on the database clock
    (a live status's ``created_at`` is kept), and log it for watchers; returns the stored
    JSON body. The one place a status is encoded and written."""
    previous = conn.execute(Q.status_created, {"ns": ns, "task_id": write.task_id, "now": now}).fetchone()
    created = float(previous[0]) if previous is not None else now
    stored = TaskStatus(
        id=write.task_id,
        state=write.state,
        payload=write.payload,
        error=write.error,
        attempt=write.attempt,
        meta=write.meta,
        created_at=moment(created),
        updated_at=moment(now),
    )
    body = dumps(stored.to_dict())
    seq = conn.execute(Q.status_event, {"ns": ns, "task_id": write.task_id, "body": body, "now": now}).lastrowid
    conn.execute(
        Q.status_upsert,
        {
            "ns": ns,
            "task_id": write.task_id,
            "state": write.state.value,
            "queue": _column(write.meta.get("queue")),
            "task": _column(write.meta.get("task")),
            "body": body,
            "seq": seq,
            "created_at": created,
            "now": now,
            "ttl": write.ttl,
        },
    )
    return body


def get_status(conn: Any, ns: str, task_id: str) -> TaskStatus | None:
    row = conn.execute(Q.status_get, {"ns": ns, "task_id": task_id, "now": db_now(conn)}).fetchone()
    return decode_status(row[0]) if row is not None else None


def watch_start(conn: Any, ns: str, task_id: str) -> tuple[TaskStatus | None, int]:
    """The current status and the change-log cursor it corresponds to, in one snapshot."""
    with snapshot(conn):
        current = get_status(conn, ns, task_id)
        cursor = int(conn.execute(Q.status_last_event, {"ns": ns, "task_id": task_id}).fetchone()[0])
    return current, cursor


def events_after(conn: Any, ns: str, task_id: str, cursor: int) -> list[tuple[int, TaskStatus]]:
    rows = conn.execute(
        Q.status_events_after, {"ns": ns, "task_id": task_id, "cursor": cursor, "limit": EVENT_BATCH}
    ).fetchall()
    return [(int(row_id), decode_status(body)) for row_id, body in rows]


def list_statuses(
    conn: Any, ns: str, state: TaskState | None, queue: str | None, task: str | None, limit: int, offset: int
) -> list[TaskStatus]:
    params: dict[str, Any] = {"ns": ns, "state": state.value if state is not None else None, "queue": queue,
                              "task": task, "limit": limit, "offset": offset, "now": db_now(conn)}
    sql = _LIST_BASE + "".join(fragment for key, fragment in _LIST_FILTERS if params[key] is not None) + _LIST_ORDER
    return [decode_status(row[0]) for row in conn.execute(sql, params)]


def expire(conn: Any, ns: str, task_id: str, ttl: float) -> None:
    with immediate(conn):
        conn.execute(Q.status_expire, {"ns": ns, "task_id": task_id, "ttl": ttl, "now": db_now(conn)})


def run_cleanup(conn: Any, schedule: SweepSchedule | None, now: float) -> None:
    """``cleanup`` inside the caller's transaction when ``schedule`` is given (it was due;
    ``finished`` runs here, on the database thread: one flag written, read on the loop)."""
    if schedule is not None:
        schedule.finished(full=cleanup(conn, now))


def cleanup(conn: Any, now: float) -> bool:
    """Delete a batch of what already expired (every namespace: expired is expired), at
    most ``PRUNE_BATCH`` rows of each table; True when a batch came back full, so more
    may be left. Heartbeats (a row per worker) go all at once. Bounded so that no
    transaction holds the write lock (nor, inside a group commit, a savepoint's in-memory
    journal) for a whole backlog: a day of expired statuses after a day of downtime goes
    batch by batch, riding on the writes that follow."""
    batch = {"now": now, "batch": PRUNE_BATCH}
    deleted = (
        conn.execute(Q.statuses_expired, batch).rowcount,
        conn.execute(Q.record_prune, batch).rowcount,
        conn.execute(Q.status_events_old, {"before": now - EVENT_RETENTION_S, "batch": PRUNE_BATCH}).rowcount,
    )
    conn.execute(Q.heartbeats_expired, {"now": now})
    return max(deleted) >= PRUNE_BATCH


# -- heartbeats ----------------------------------------------------------------------


def put_heartbeat(conn: Any, ns: str, heartbeat: WorkerHeartbeat, ttl: float, clean: SweepSchedule | None) -> None:
    body = dumps(heartbeat.to_dict())
    with immediate(conn):
        now = db_now(conn)
        conn.execute(Q.heartbeat_put, {"ns": ns, "worker_id": heartbeat.worker_id, "body": body, "ttl": ttl, "now": now})
        run_cleanup(conn, clean, now)


def get_heartbeat(conn: Any, ns: str, worker_id: str) -> WorkerHeartbeat | None:
    row = conn.execute(Q.heartbeat_get, {"ns": ns, "worker_id": worker_id, "now": db_now(conn)}).fetchone()
    return decode_heartbeat(row[0]) if row is not None else None


def list_heartbeats(conn: Any, ns: str) -> list[WorkerHeartbeat]:
    rows = conn.execute(Q.heartbeat_list, {"ns": ns, "now": db_now(conn)}).fetchall()
    return [hb for hb in (decode_heartbeat(row[0]) for row in rows) if hb is not None]


# -- records and audit ---------------------------------------------------------------


def put_record(conn: Any, ns: str, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
    body = dumps(value)
    with immediate(conn):
        now = db_now(conn)
        conn.execute(Q.record_put, {"ns": ns, "kind": kind, "key": key, "value": body, "ttl": ttl, "now": now})
        conn.execute(Q.record_prune, {"now": now, "batch": PRUNE_BATCH})


def get_record(conn: Any, ns: str, kind: str, key: str) -> dict[str, Any] | None:
    row = conn.execute(Q.record_get, {"ns": ns, "kind": kind, "key": key, "now": db_now(conn)}).fetchone()
    return json.loads(row[0]) if row is not None else None


def list_records(conn: Any, ns: str, kind: str, since: float | None = None) -> dict[str, dict[str, Any]]:
    """Live records of ``kind``; with ``since`` (POSIX seconds) only those written since."""
    rows = conn.execute(Q.record_list, {"ns": ns, "kind": kind, "now": db_now(conn), "since": since}).fetchall()
    return {key: json.loads(value) for key, value in rows}


def delete_record(conn: Any, ns: str, kind: str, key: str) -> bool:
    """True when a live record was there."""
    with immediate(conn):
        now = db_now(conn)
        row = conn.execute(Q.record_delete, {"ns": ns, "kind": kind, "key": key}).fetchone()
    return row is not None and (row[0] is None or row[0] > now)


def append_audit(conn: Any, ns: str, record: dict[str, Any], retention: float) -> None:
    body = dumps(record)
    with immediate(conn):
        now = db_now(conn)
        conn.execute(Q.audit_append, {"ns": ns, "body": body, "now": now})
        conn.execute(Q.audit_prune, {"ns": ns, "batch": AUDIT_PRUNE_BATCH, "before": now - retention})


def list_audit(conn: Any, ns: str, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = conn.execute(Q.audit_page, {"ns": ns, "limit": limit, "offset": offset}).fetchall()
    return [json.loads(row[0]) for row in rows]


__all__ = [
    "EVENT_RETENTION_S",
    "StatusWrites",
    "append_audit",
    "cleanup",
    "decode_status",
    "delete_record",
    "events_after",
    "expire",
    "get_heartbeat",
    "get_record",
    "get_status",
    "list_audit",
    "list_heartbeats",
    "list_records",
    "list_statuses",
    "put_heartbeat",
    "put_record",
    "put_status",
    "put_statuses",
    "run_cleanup",
    "set_status",
    "set_statuses",
    "watch_start",
]


# -- schedules (the schedule store) ------------------------------------------------------


def get_schedule(conn: Any, ns: str, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
    row = conn.execute(Q.schedule_get, {"ns": ns, "id": schedule_id}).fetchone()
    return (row[0], json.loads(row[1])) if row is not None else None


def list_schedules(conn: Any, ns: str) -> list[tuple[int, dict[str, Any]]]:
    return [(version, json.loads(doc)) for version, doc in conn.execute(Q.schedule_list, {"ns": ns}).fetchall()]


def save_schedule(conn: Any, ns: str, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
    """Compare-and-set on ``version`` (None: insert only when absent); the new version or None."""
    body = dumps(doc)
    with immediate(conn):
        if version is None:
            done = conn.execute(Q.schedule_insert, {"ns": ns, "id": schedule_id, "doc": body}).rowcount
        else:
            done = conn.execute(Q.schedule_update, {"ns": ns, "id": schedule_id, "doc": body, "version": version}).rowcount
    return (version or 0) + 1 if done == 1 else None


def delete_schedule(conn: Any, ns: str, schedule_id: str, version: int | None) -> bool:
    with immediate(conn):
        return conn.execute(Q.schedule_delete, {"ns": ns, "id": schedule_id, "version": version}).rowcount == 1
