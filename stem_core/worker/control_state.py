"""``ControlState``: what the control plane has told one worker.

Paused queues, revoked tasks and the stop request live here, in one object the three
parties share instead of reaching into the ``Worker``:

* the command handlers (``commands.py``) and the signal handlers change it;
* the heartbeat reports it (``paused_queues``);
* the runtime obeys it: the fetch supervisor reopens the task subscription when
  ``pauses_changed`` is set, a delivery is handed back while ``is_paused`` its queue, the
  executor skips a task with a ``revocation``, and the main loop wakes on ``stop_changed``.

The persisted pause and revoke records (``stem_core/control/pause.py``, ``revoke.py``)
are read in at start and at every heartbeat (``refresh``): every pause, but only the
revocations written since the last read (all of them at start and every
``REVOKE_FULL_RELOAD_EVERY``-th time); a command updates the state at once, before the
next heartbeat would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..clock import monotonic, utcnow
from ..contract import ResultBackend
from ..control.pause import pause_active, paused_queues
from ..control.revoke import REVOKE_FULL_RELOAD_EVERY, REVOKE_SINCE_OVERLAP_SECONDS, revocation_expired, revoked_tasks
from .held import ACTIVE, HeldSet

log = logging.getLogger("stem.worker")

# Stop modes by strength: a stop request only ever escalates.
STOP_MODES = {"warm": 1, "soft": 2, "hard": 3}


class ControlState:
    """The pauses, revocations and stop request one worker obeys.

    ``held`` is the worker's set of deliveries: a revocation with ``terminate`` cancels the
    running ones. ``shutdown_grace`` (seconds) is how long a soft stop lets them finish.
    """

    def __init__(self, *, worker_id: str, queues: Sequence[str], held: HeldSet, shutdown_grace: float) -> None:
        self.worker_id = worker_id
        self.queues = tuple(queues)
        self._held = held
        self._shutdown_grace = shutdown_grace
        self._pause_records: dict[str, dict[str, Any]] = {}
        self._paused: frozenset[str] = frozenset()
        self._revoked: dict[str, dict[str, Any]] = {}
        # When the last read of the persisted revocations began (None: never read), and
        # how many reads since the last full one.
        self._revocations_read_at: datetime | None = None
        self._incremental_reads = 0
        self._stop_mode: str | None = None
        self._soft_deadline: float | None = None
        # Set when the paused set of this worker's queues changes; the fetch supervisor
        # clears it before each subscription and reopens on it.
        self.pauses_changed = asyncio.Event()
        # Set on every escalation of the stop request; the runtime clears it while it waits.
        self.stop_changed = asyncio.Event()

    # -- pauses ---------------------------------------------------------------------

    @property
    def paused(self) -> frozenset[str]:
        """Every queue paused for this worker now (also queues it does not consume)."""
        return self._paused

    def is_paused(self, queue: str) -> bool:
        return queue in self._paused

    def paused_queues(self) -> list[str]:
        """This worker's queues that are paused for it now."""
        return [q for q in self.queues if q in self._paused]

    def active_queues(self) -> list[str]:
        """This worker's queues that are not paused: the ones it fetches from."""
        return [q for q in self.queues if q not in self._paused]

    def set_pauses(self, records: Mapping[str, dict[str, Any]]) -> None:
        """Replace the known pause records (the persisted ones) and apply them."""
        self._pause_records = dict(records)
        self._apply_pauses()

    def merge_pauses(self, records: Mapping[str, dict[str, Any]]) -> None:
        """Add the pause records of a ``pause`` command."""
        self._pause_records.update(records)
        self._apply_pauses()

    def remove_pauses(self, queues: Iterable[str]) -> None:
        """Forget the pauses of ``queues`` (a ``resume`` command)."""
        for queue in queues:
            self._pause_records.pop(queue, None)
        self._apply_pauses()

    def _apply_pauses(self) -> None:
        now = utcnow()
        paused = frozenset(q for q, r in self._pause_records.items() if pause_active(r, self.worker_id, now=now))
        if paused == self._paused:
            return
        ours = set(self.queues)
        if (paused ^ self._paused) & ours:
            log.info("worker %s: paused queues now %s", self.worker_id, ",".join(sorted(paused & ours)) or "none")
            self.pauses_changed.set()
        self._paused = paused

    # -- revocations ----------------------------------------------------------------

    def revocation(self, task_id: str) -> dict[str, Any] | None:
        """The revoke record of ``task_id``, or None when it is not revoked."""
        return self._revoked.get(task_id)

    def revoked_ids(self) -> list[str]:
        return list(self._revoked)

    def apply_revocations(self, records: Mapping[str, dict[str, Any]], *, replace: bool = False) -> list[str]:
        """Remember revocations (``replace``: the persisted set replaces the known one);
        cancel running tasks revoked with ``terminate``. Returns the ids terminated now."""
        if replace:
            self._revoked = dict(records)
        else:
            self._revoked.update(records)
        terminated = []
        for task_id, record in records.items():
            if not record.get("terminate"):
                continue
            for held in self._held.by_task_id(task_id):
                if held.state == ACTIVE and held.cancel_reason is None:
                    held.cancel_reason = "revoked"
                    if held.body is not None:
                        held.body.cancel()
                    terminated.append(task_id)
        return terminated

    async def refresh(self, backend: ResultBackend) -> None:
        """Read the persisted pause and revoke records (at start and every heartbeat)."""
        self.set_pauses(await paused_queues(backend))
        await self.refresh_revocations(backend)

    async def refresh_revocations(self, backend: ResultBackend) -> None:
        """All revocations the first time and every ``REVOKE_FULL_RELOAD_EVERY``-th time
        (they replace the known ones); otherwise those written since the previous read
        began, less ``REVOKE_SINCE_OVERLAP_SECONDS``, merged in, and the known ones past
        their expiry dropped."""
        started = utcnow()
        last = self._revocations_read_at
        if last is None or self._incremental_reads + 1 >= REVOKE_FULL_RELOAD_EVERY:
            self.apply_revocations(await revoked_tasks(backend), replace=True)
            self._incremental_reads = 0
        else:
            since = last - timedelta(seconds=REVOKE_SINCE_OVERLAP_SECONDS)
            self.apply_revocations(await revoked_tasks(backend, since=since))
            self._revoked = {k: r for k, r in self._revoked.items() if not revocation_expired(r, started)}
            self._incremental_reads += 1
        self._revocations_read_at = started

    # -- stop request ---------------------------------------------------------------

    @property
    def stop_mode(self) -> str | None:
        """None while running, else the strongest stop requested: warm, soft or hard."""
        return self._stop_mode

    @property
    def stopping(self) -> bool:
        return self._stop_mode is not None

    @property
    def soft_deadline(self) -> float | None:
        """When a soft stop interrupts the running tasks (monotonic seconds)."""
        return self._soft_deadline

    def request_stop(self, mode: str) -> None:
        """Ask the worker to stop: ``warm`` finishes running tasks, ``soft`` interrupts
        them after the grace period, ``hard`` hands everything back now. Only escalates."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {', '.join(STOP_MODES)}, got {mode!r}")
        if self._stop_mode is not None and STOP_MODES[mode] <= STOP_MODES[self._stop_mode]:
            return
        self._stop_mode = mode
        if mode == "soft":
            self._soft_deadline = monotonic() + self._shutdown_grace
        self.stop_changed.set()


__all__ = ["STOP_MODES", "ControlState"]
