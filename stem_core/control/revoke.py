"""Revoked task ids, persisted as backend records (kind ``revoke``) with a TTL.

A worker loads them at start and refreshes them at every heartbeat, so a worker started
after the ``revoke`` command still cancels the task when it is delivered.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..clock import to_iso, utcnow
from ..contract import ResultBackend
from ..settings import RESULT_TTL_SECONDS

REVOKE_KIND = "revoke"
# As long as a result is kept: a revocation older than that has nothing left to cancel.
REVOKE_TTL_SECONDS = RESULT_TTL_SECONDS


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


async def revoked_tasks(backend: ResultBackend) -> dict[str, dict[str, Any]]:
    """Every live revocation, by task id."""
    return await backend.list_records(REVOKE_KIND)


__all__ = ["REVOKE_KIND", "REVOKE_TTL_SECONDS", "revoke_record", "revoke_tasks", "revoked_tasks"]
