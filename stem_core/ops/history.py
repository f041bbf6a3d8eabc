"""``RateHistory``: the rate samples one ``Ops`` keeps, shared with every other caller
through one backend record (kind ``ops.rates``), so a one-shot ``stem inspect queues``
gets rates from the samples the last call left (``docs/ops.md``, "Rates").

The record is a convenience: a backend that refuses it costs a rate window, never a read.
Nor does a backend that is slow to take it: the write runs beside the reads (one at a
time), so a view never waits on it (a SQLite file whose write lock a stopped process
holds makes it wait the busy timeout); ``flush`` waits for it, a little, and
``Ops.close`` flushes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from ..contract import ResultBackend
from ..errors import StemError
from .directory import log
from .rates import PERSIST_GAP_S, RATE_RECORD_KEY, RATE_RECORD_KIND, RATE_RECORD_TTL_S, RateTracker

# How long ``flush`` (``Ops.close``) waits for the last write of the samples.
FLUSH_TIMEOUT_S = 2.0


class RateHistory:
    """A ``RateTracker``, loaded once from the shared record and written back at most every
    ``PERSIST_GAP_S``; with ``persist`` False it never touches the backend."""

    def __init__(self, backend: ResultBackend, tracker: RateTracker, *, persist: bool = True) -> None:
        self.backend = backend
        self.tracker = tracker
        self.persist = persist
        self._loaded = False
        self._persisted_at: datetime | None = None
        self._writing: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Merge the persisted samples (the first call only)."""
        if not self.persist or self._loaded:
            return
        self._loaded = True
        try:
            self.tracker.load_record(await self.backend.get_record(RATE_RECORD_KIND, RATE_RECORD_KEY))
        except (StemError, ValueError) as exc:
            log.debug("no persisted rate samples: %s", exc)

    async def save(self, now: datetime) -> None:
        """Start writing the tracker's samples back (skipped within ``PERSIST_GAP_S`` of the
        last write, and while that write is still running); does not wait for it."""
        if not self.persist:
            return
        if self._persisted_at is not None and (now - self._persisted_at).total_seconds() < PERSIST_GAP_S:
            return
        if self._writing is not None and not self._writing.done():
            return
        self._persisted_at = now
        self._writing = asyncio.create_task(self._write(self.tracker.to_record()))

    async def flush(self) -> None:
        """Wait for the write ``save`` started, if any, at most ``FLUSH_TIMEOUT_S``; a write
        still waiting then is given up (the samples are a convenience)."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await writing
        except TimeoutError:
            log.debug("gave up persisting rate samples after %g s", FLUSH_TIMEOUT_S)

    async def _write(self, record: dict[str, Any]) -> None:
        try:
            await self.backend.put_record(RATE_RECORD_KIND, RATE_RECORD_KEY, record, ttl=RATE_RECORD_TTL_S)
        except (StemError, ValueError) as exc:
            log.debug("could not persist rate samples: %s", exc)


__all__ = ["RateHistory"]
