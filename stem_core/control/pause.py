"""Paused queues, persisted as backend records so a restarted worker stays paused.

One record per queue: kind ``pause``, key = queue name, value ``{queue, reason, by,
paused_at, until, workers}``. ``until`` (optional) also becomes the record's TTL, so an
expired pause disappears on its own; ``workers`` (None = every worker) narrows a pause
sent to chosen workers. Workers read these records at start and at every heartbeat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from ..clock import parse_iso, to_iso, utcnow
from ..contract import ResultBackend
from ..envelope import validate_name
from .protocol import until_iso

PAUSE_KIND = "pause"


def queue_list(queues: Iterable[str] | str) -> list[str]:
    """One queue name or several, validated and de-duplicated in order (at least one)."""
    if isinstance(queues, str):
        queues = [queues]
    names = list(dict.fromkeys(validate_name(q) for q in queues))
    if not names:
        raise ValueError("name at least one queue")
    return names


def pause_record(
    queue: str, *, reason: str | None, by: str | None, paused_at: str, until: str | None, workers: list[str] | None
) -> dict[str, Any]:
    """The record of one paused queue (as persisted, and as a worker told by command keeps it)."""
    return {
        "queue": queue,
        "reason": reason,
        "by": by,
        "paused_at": paused_at,
        "until": until,
        "workers": list(workers) if workers else None,
    }


async def pause_queues(
    backend: ResultBackend,
    queues: Iterable[str] | str,
    *,
    reason: str | None,
    by: str | None,
    until: datetime | str | float | None = None,
    workers: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Persist a pause of each queue; returns the records written (by queue)."""
    names = queue_list(queues)
    expires = until_iso(until)
    ttl = (parse_iso(expires) - utcnow()).total_seconds() if expires else None
    written: dict[str, dict[str, Any]] = {}
    for queue in names:
        record = pause_record(queue, reason=reason, by=by, paused_at=to_iso(utcnow()), until=expires, workers=workers)
        await backend.put_record(PAUSE_KIND, queue, record, ttl=ttl)
        written[queue] = record
    return written


async def resume_queues(backend: ResultBackend, queues: Iterable[str] | str, *, by: str | None) -> list[str]:
    """Delete the pause records of ``queues``; returns the queues that were paused."""
    resumed = []
    for queue in queue_list(queues):
        if await backend.delete_record(PAUSE_KIND, queue):
            resumed.append(queue)
    return resumed


async def paused_queues(backend: ResultBackend) -> dict[str, dict[str, Any]]:
    """Every live pause record, by queue (an ``until`` in the past counts as resumed)."""
    records = await backend.list_records(PAUSE_KIND)
    # Anyone who can write to the backend can write a record: one that is not an object,
    # or names no valid queue, is ignored rather than breaking every overview.
    return {queue: record for queue, record in records.items()
            if isinstance(record, dict) and _valid_queue(queue) and pause_active(record)}


def _valid_queue(queue: Any) -> bool:
    try:
        validate_name(queue)
    except ValueError:
        return False
    return True


def pause_active(record: dict[str, Any], worker_id: str | None = None, *, now: datetime | None = None) -> bool:
    """True when ``record`` pauses its queue now (for ``worker_id``, when given)."""
    until = record.get("until")
    if isinstance(until, str):
        try:
            if parse_iso(until) <= (now or utcnow()):
                return False
        except ValueError:
            pass
    workers = record.get("workers")
    if not isinstance(workers, list):
        workers = None
    return worker_id is None or not workers or worker_id in workers


__all__ = ["PAUSE_KIND", "pause_active", "pause_queues", "pause_record", "paused_queues", "queue_list", "resume_queues"]
