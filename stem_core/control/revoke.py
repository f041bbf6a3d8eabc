"""Revoked task ids, persisted as backend records (kind ``revoke``) with a TTL.

A worker loads them all at start and then, at each heartbeat, only those written since its
last read (``since``, less ``REVOKE_SINCE_OVERLAP_SECONDS`` for clock skew), dropping the
ones past ``REVOKE_TTL_SECONDS`` itself; every ``REVOKE_FULL_RELOAD_EVERY``-th heartbeat
reads them all again (the backstop for records deleted or rewritten with an older clock).
A worker started after the ``revoke`` command still cancels the task when it is delivered.
Each backend deletes expired revocation rows as records are written (a bounded batch per
write) and in its periodic cleanup.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

from ..clock import parse_iso, to_iso, utcnow
from ..contract import ResultBackend
from ..settings import CONTROL_CLOCK_SKEW_SECONDS, RESULT_TTL_SECONDS

REVOKE_KIND = "revoke"
# As long as a result is kept: a revocation older than that has nothing left to cancel.
REVOKE_TTL_SECONDS = RESULT_TTL_SECONDS
# An incremental read asks for revocations written since the previous read began, less
# this: the clocks of the writer (a CLI host, the database) and the worker may differ.
REVOKE_SINCE_OVERLAP_SECONDS = CONTROL_CLOCK_SKEW_SECONDS
# Every this many refreshes (heartbeats) a worker reads every revocation again.
REVOKE_FULL_RELOAD_EVERY = 30


def revoke_record(task_id: str, *, terminate: bool, reason: str | None, by: str | None, revoked_at: str) -> dict[str, Any]:
    """The record of one revoked task (as persisted, and as a worker told by command keeps it)."""
    return {"id": task_id, "terminate": bool(terminate), "reason": reason, "by": by, "revoked_at": revoked_at}


async def revoke_tasks(
    backend: ResultBackend,
    task_ids: Iterable[str] | str,
    *,
    terminate: bool = False,
    reason: str | None = None,
    by: str | None = None,
    ttl: float = REVOKE_TTL_SECONDS,
) -> list[str]:
    """Persist revocations; returns the ids."""
    if isinstance(task_ids, str):
        task_ids = [task_ids]
    ids = list(dict.fromkeys(task_ids))
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("revoke needs a non-empty list of task ids")
    at = to_iso(utcnow())
    for task_id in ids:
        record = revoke_record(task_id, terminate=terminate, reason=reason, by=by, revoked_at=at)
        await backend.put_record(REVOKE_KIND, task_id, record, ttl=ttl)
    return ids


async def revoked_tasks(backend: ResultBackend, *, since: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Every live revocation by task id; with ``since``, those written since then."""
    return await backend.list_records(REVOKE_KIND, since=since)


def revocation_expired(record: dict[str, Any], now: datetime) -> bool:
    """True when ``record`` was revoked more than ``REVOKE_TTL_SECONDS`` before ``now``
    (its backend record has expired); a record without a readable time is not."""
    try:
        revoked_at = parse_iso(str(record.get("revoked_at")))
    except ValueError:
        return False
    return revoked_at + timedelta(seconds=REVOKE_TTL_SECONDS) <= now


__all__ = [
    "REVOKE_FULL_RELOAD_EVERY", "REVOKE_KIND", "REVOKE_SINCE_OVERLAP_SECONDS", "REVOKE_TTL_SECONDS",
    "revocation_expired", "revoke_record", "revoke_tasks", "revoked_tasks",
]
