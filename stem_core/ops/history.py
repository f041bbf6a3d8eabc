"""``RateHistory``: the rate samples one ``Ops`` keeps, shared with every other caller
through one backend record (kind ``ops.rates``), so a one-shot ``stem inspect queues``
gets rates from the samples the last call left (``docs/ops.md``, "Rates").

The record is a convenience: a backend that refuses it costs a rate window, never a read.
"""

from __future__ import annotations

from datetime import datetime

from ..contract import ResultBackend
from ..errors import StemError
from .directory import log
from .rates import PERSIST_GAP_S, RATE_RECORD_KEY, RATE_RECORD_KIND, RATE_RECORD_TTL_S, RateTracker


class RateHistory:
    """A ``RateTracker``, loaded once from the shared record and written back at most every
    ``PERSIST_GAP_S``; with ``persist`` False it never touches the backend."""

    def __init__(self, backend: ResultBackend, tracker: RateTracker, *, persist: bool = True) -> None:
        self.backend = backend
        self.tracker = tracker
        self.persist = persist
        self._loaded = False
        self._persisted_at: datetime | None = None

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
        """Write the tracker's samples back (skipped within ``PERSIST_GAP_S`` of the last write)."""
        if not self.persist:
            return
        if self._persisted_at is not None and (now - self._persisted_at).total_seconds() < PERSIST_GAP_S:
            return
        self._persisted_at = now
        try:
            await self.backend.put_record(RATE_RECORD_KIND, RATE_RECORD_KEY, self.tracker.to_record(), ttl=RATE_RECORD_TTL_S)
        except (StemError, ValueError) as exc:
            log.debug("could not persist rate samples: %s", exc)


__all__ = ["RateHistory"]
