"""``explain(task_id)``: where a task is now, and every reason it is not running.

The task is looked for where it is cheapest first: its status (one key), the in-flight
messages of its queue (few), its dead letter (one lookup), then delayed and pending pages
up to ``EXPLAIN_SCAN_LIMIT`` messages (the position in the queue comes from that scan).
Queue-level blockers (paused, no live worker, all workers busy) come from heartbeats and
pause records, the same facts the overview uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator

from ..clock import to_iso
from ..contract import Broker, DeadLetterEntry, MessageInfo, ResultBackend, TaskState, TaskStatus
from ..envelope import validate_name
from ..errors import InvalidName
from . import text
from .commands import stem_command
from .directory import LEASES_LIMIT, Directory, Heartbeats, Pauses, active_count, heartbeat_age, is_internal
from .inspect import Inspector
from .models import Blocker, Explanation, LeaseInfo

# What the operator fills in in the suggested ``stem worker`` line (inert when pasted as is).
WORKER_APP_PLACEHOLDER = "MODULE:APP"

# Pending and delayed messages are read in pages of this size, at most this many in all.
EXPLAIN_PAGE = 500
EXPLAIN_SCAN_LIMIT = 10_000


@dataclass(slots=True)
class _Found:
    state: str  # inflight | dead | delayed | pending
    queue: str
    info: MessageInfo | None = None
    dead: DeadLetterEntry | None = None
    position: int | None = None


async def scan_pages(broker: Broker, queue: str, state: str) -> AsyncIterator[tuple[int, list[MessageInfo]]]:
    """``(offset, page)`` of ``state`` in queue order: the in-flight messages as one page
    of ``LEASES_LIMIT``, pending or delayed ones ``EXPLAIN_PAGE`` at a time up to
    ``EXPLAIN_SCAN_LIMIT`` (a last page that is full means the scan stopped there). Pages
    follow the broker's cursor, so each costs one page however deep the scan is."""
    if state == "inflight":
        yield 0, await broker.peek(queue, state=state, limit=LEASES_LIMIT)
        return
    offset, cursor = 0, None
    while offset < EXPLAIN_SCAN_LIMIT:
        page = await broker.peek_page(queue, state=state, limit=EXPLAIN_PAGE, cursor=cursor)
        yield offset, page.messages
        if len(page.messages) < EXPLAIN_PAGE or page.next_cursor is None:
            return
        offset += EXPLAIN_PAGE
        cursor = page.next_cursor


class Explainer:
    """Finds a task through the contracts; leases are judged by ``inspector``'s rule."""

    def __init__(self, broker: Broker, backend: ResultBackend, directory: Directory, inspector: Inspector) -> None:
        self.broker = broker
        self.backend = backend
        self.directory = directory
        self.inspector = inspector

    async def explain(self, task_id: str) -> Explanation:
        """Where ``task_id`` is and why it is not running (``state == "unknown"`` when
        neither the broker nor the backend knows it)."""
        if not isinstance(task_id, str) or not task_id or len(task_id) > 200:
            raise ValueError(f"task id must be a non-empty string of at most 200 characters, got {task_id!r}")
        status = await self.backend.get_status(task_id)
        heartbeats = await self.directory.heartbeats()
        pauses = await self.directory.pauses()
        found, scanned_out = await self._find(task_id, status, heartbeats, pauses)
        now = self.directory.now()
        status_dict = status.to_dict() if status is not None else None
        if found is None:
            return self._not_found(task_id, status, status_dict, scanned_out, heartbeats, pauses, now)
        envelope = (found.info.envelope if found.info else found.dead.envelope if found.dead else None)
        base: dict[str, Any] = {
            "task_id": task_id, "queue": found.queue, "status": status_dict,
            "envelope": envelope.to_dict() if envelope is not None else None,
            "status_note": self._status_note(status, found, heartbeats, now),
        }
        fix_requeue = stem_command("requeue", found.queue, "--id", task_id)
        if found.state == "dead" and found.dead is not None:
            dead = found.dead
            ago = text.duration((now - dead.dead_at).total_seconds())
            blocker = Blocker("dead", f"dead-lettered {ago} ago: {dead.reason}", stem_command("dlq", "replay", found.queue, "--id", task_id))
            return Explanation(state="dead", summary=f"dead letter in {found.queue} ({dead.reason})", blockers=[blocker],
                               dead_letter=dead.to_dict(), **base)
        if found.state == "inflight" and found.info is not None:
            lease = self.inspector.lease(found.queue, found.info, heartbeats, now)
            return self._leased(lease, heartbeats, fix_requeue, base)
        queue_blockers = self._queue_blockers(found.queue, heartbeats, pauses, now)
        if found.state == "delayed" and found.info is not None:
            due = found.info.envelope.not_before
            wait = (due - now).total_seconds() if due is not None else 0.0
            when = f"{to_iso(due)} (in {text.duration(max(0.0, wait))})" if due is not None else "soon"
            blockers = [Blocker("not-due", f"not due until {when}", fix_requeue + "  # run it now")] + queue_blockers
            return Explanation(state="delayed", summary=f"delayed in {found.queue} until {when}", blockers=blockers,
                               due_at=due, **base)
        position = found.position
        blockers = queue_blockers or [self._behind(found, heartbeats, now)]
        where = f"position {position}" if position is not None else "somewhere"
        return Explanation(state="queued", summary=f"queued in {found.queue} at {where}", blockers=blockers,
                           position=position, **base)

    # -- locating -------------------------------------------------------------------

    async def _find(
        self, task_id: str, status: TaskStatus | None, heartbeats: Heartbeats, pauses: Pauses
    ) -> tuple[_Found | None, bool]:
        """The message, and whether a scan stopped at its limit before seeing everything."""
        hint = status.meta.get("queue") if status is not None else None
        try:
            hinted = [validate_name(hint)] if isinstance(hint, str) else []
        except InvalidName:
            hinted = []
        others = [q for q in await self.directory.known_queues(heartbeats, pauses) if q not in hinted]
        terminal = status is not None and status.state.is_terminal
        scanned_out = False
        # A finished task is only looked for where it can still be: a lease or a dead letter.
        order: tuple[str, ...] = ("inflight", "dead") if terminal else ("inflight", "dead", "pending", "delayed")
        if status is not None and status.state.value == "retried":
            order = ("inflight", "dead", "delayed", "pending")  # a retry waits out its backoff
        for queue in hinted + ([] if hinted and terminal else others):
            if is_internal(queue):
                continue
            for state in order:
                found, limited = await self._look(task_id, queue, state)
                scanned_out = scanned_out or limited
                if found is not None:
                    return found, scanned_out
        return None, scanned_out

    async def _look(self, task_id: str, queue: str, state: str) -> tuple[_Found | None, bool]:
        caps = self.broker.capabilities
        if state == "dead":
            if not caps.dead_letters:
                return None, False
            entry = await self.broker.get_dead_letter(queue, task_id)
            return (_Found("dead", queue, dead=entry) if entry is not None else None), False
        if not caps.peek:
            return None, False
        full = False
        async for offset, page in scan_pages(self.broker, queue, state):
            for index, info in enumerate(page):
                if info.envelope.id == task_id:
                    position = offset + index + 1 if state != "inflight" else None
                    return _Found(state, queue, info=info, position=position), False
            full = len(page) == EXPLAIN_PAGE
        return None, full and state != "inflight"

    # -- reasons --------------------------------------------------------------------

    def _status_note(self, status: TaskStatus | None, found: _Found, heartbeats: Heartbeats,
                     now: datetime) -> str | None:
        """What a "running" status means when the worker that wrote it stopped heartbeating:
        it is not running any more, and when it will run again."""
        if status is None or status.state is not TaskState.RUNNING:
            return None
        worker = status.meta.get("worker")
        if not isinstance(worker, str) or not worker:
            return None
        hb = heartbeats.get(worker)
        if self.directory.alive(hb, now):
            return None
        gone = (f"which stopped heartbeating {text.duration(heartbeat_age(hb, now))} ago" if hb is not None
                else "which has no heartbeat any more")
        info = found.info
        if found.state == "inflight" and info is not None and info.lease_holder == worker:
            left = (info.lease_expires_at - now).total_seconds() if info.lease_expires_at is not None else None
            when = (f"will run again when its lease expires in {text.duration(left)}" if left is not None and left > 0
                    else "its lease has expired: it runs again at the next claim")
            return f"running on {worker}, {gone}; {when}"
        if found.state == "inflight" and info is not None and info.lease_holder:
            return f"was running on {worker}, {gone}; redelivered to {info.lease_holder}"
        if found.state in ("pending", "delayed"):
            return f"was running on {worker}, {gone}; has been redelivered: it runs again when a worker takes it"
        return None

    def _leased(self, lease: LeaseInfo, heartbeats: Heartbeats, fix: str, base: dict[str, Any]) -> Explanation:
        holder = lease.holder or "an unknown consumer"
        expires = (f"it runs again when its lease expires in {text.duration(lease.expires_in)}"
                   if lease.expires_in and lease.expires_in > 0 else "its lease has expired")
        if lease.stuck and lease.expires_in is not None and lease.expires_in <= 0:
            blocker = Blocker("lease-expired", f"leased by {holder}, {lease.stuck_reason}; it goes back to the queue "
                              "at the next claim", fix)
            return Explanation(state="leased", summary=f"leased by {holder}, lease expired", blockers=[blocker],
                               lease=lease, **base)
        if lease.stuck:
            blocker = Blocker("dead-holder", f"held by a dead worker: {lease.stuck_reason}; {expires}, or requeue it now",
                              fix)
            return Explanation(state="leased", summary=f"leased by {holder}, which looks dead", blockers=[blocker],
                               lease=lease, **base)
        if lease.state == "active":
            ran = f" for {text.duration(lease.held_for)}" if lease.held_for is not None else ""
            blocker = Blocker("running", f"running on {holder}{ran}")
            return Explanation(state="running", summary=f"running on {holder}{ran}", blockers=[blocker], lease=lease,
                               **base)
        hb = heartbeats.get(lease.holder or "")
        if lease.state == "reserved" and hb is not None:
            active = active_count(hb)
            blocker = Blocker("prefetched", f"prefetched by {holder}, waiting for a free slot behind {active} running "
                              f"task(s) (concurrency {hb.concurrency})", fix + "  # let another worker take it")
            return Explanation(state="leased", summary=f"prefetched by {holder}", blockers=[blocker], lease=lease, **base)
        blocker = Blocker("leased", f"leased by {holder} (just claimed: not in its last heartbeat yet); {expires}")
        return Explanation(state="leased", summary=f"leased by {holder}", blockers=[blocker], lease=lease, **base)

    def _queue_blockers(self, queue: str, heartbeats: Heartbeats, pauses: Pauses,
                        now: datetime) -> list[Blocker]:
        """Why a due message of ``queue`` is not being taken (empty when nothing blocks it)."""
        blockers = []
        record = pauses.get(queue)
        if record is not None and not record.get("workers"):
            until = f" until {record['until']}" if record.get("until") else ""
            blockers.append(Blocker("paused", f"queue {queue} is paused by {record.get('by') or 'someone'}: "
                                    f"{record.get('reason') or 'no reason given'}{until}",
                                    stem_command("broadcast", "resume", "--queue", queue)))
        serving = self.directory.serving(queue, heartbeats, now)
        if not serving:
            live = [hb for hb in heartbeats.values() if self.directory.alive(hb, now)]
            if live:
                others = sorted({q for hb in live for q in hb.queues})
                detail = f"the {len(live)} live worker(s) serve {', '.join(others)}"
            else:
                detail = "no worker is alive at all"
            blockers.append(Blocker("no-workers", f"no live worker serves queue {queue}: {detail}",
                                    stem_command("worker", "--app", WORKER_APP_PLACEHOLDER, "--queues", queue)))
        elif all(active_count(hb) >= hb.concurrency for hb in serving):
            slots = sum(hb.concurrency for hb in serving)
            blockers.append(Blocker("workers-busy", f"all {len(serving)} worker(s) serving {queue} are busy "
                                    f"({slots} of {slots} slots running)"))
        return blockers

    def _behind(self, found: _Found, heartbeats: Heartbeats, now: datetime) -> Blocker:
        serving = self.directory.serving(found.queue, heartbeats, now)
        free = sum(max(0, hb.concurrency - active_count(hb)) for hb in serving)
        priority = found.info.envelope.priority if found.info else 0
        if found.position == 1:
            return Blocker("behind-others", f"next in line (priority {priority}); {free} free slot(s): it should start now")
        return Blocker("behind-others", f"{(found.position or 1) - 1} message(s) ahead of it (priority {priority}); "
                       f"{free} free slot(s) among {len(serving)} worker(s): it starts when they are through")

    def _not_found(self, task_id: str, status: TaskStatus | None, status_dict: dict[str, Any] | None, scanned_out: bool,
                   heartbeats: Heartbeats, pauses: Pauses, now: datetime) -> Explanation:
        if status is None:
            blocker = Blocker("unknown-id", "unknown id: never enqueued here, or its result expired (results are kept "
                              "1 day), or it ran in another namespace")
            return Explanation(task_id=task_id, state="unknown", queue=None, summary="unknown task id",
                               blockers=[blocker])
        queue = status.meta.get("queue") if isinstance(status.meta.get("queue"), str) else None
        if status.state.is_terminal:
            when = to_iso(status.updated_at) if status.updated_at else "?"
            message = f"finished: {status.state.value} at {when}"
            if status.error:
                message += f" ({status.error.get('type')}: {status.error.get('message')})"
            return Explanation(task_id=task_id, state="done", queue=queue, summary=message,
                               blockers=[Blocker("done", message)], status=status_dict)
        if not self.broker.capabilities.peek:
            message = (f"status is {status.state.value}; the {self.broker.scheme} broker cannot peek at messages, so "
                       "Stem cannot say where in the queue it is")
        elif scanned_out:
            message = (f"status is {status.state.value} but the task is not among the first {EXPLAIN_SCAN_LIMIT} "
                       "pending or delayed messages: it is queued further back")
        else:
            message = (f"status is {status.state.value} but no queue holds the message: it was removed or purged, "
                       "or its worker lost it (an expired result of a crash)")
        blockers = [Blocker("not-located", message)]
        if queue is not None:
            blockers += self._queue_blockers(queue, heartbeats, pauses, now)
        state = "queued" if scanned_out else "unknown"
        return Explanation(task_id=task_id, state=state, queue=queue, summary=message, blockers=blockers,
                           status=status_dict)


__all__ = ["EXPLAIN_PAGE", "EXPLAIN_SCAN_LIMIT", "Explainer", "scan_pages"]
