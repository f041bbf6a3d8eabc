"""``LeaseKeeper``: renews the lease of every held delivery, from the event loop.

Renewal never runs inside a task: a sync task blocking its thread (sleep, CPU loop)
cannot stop it. Reserved deliveries are renewed too, so a delivery waiting behind slow
tasks is not redelivered to another worker. Each delivery is renewed at half its lease,
in a renewal of its own: one renewal that is slow or hangs (a database lock held
elsewhere, a broker that stopped answering) does not hold back the others.

A delivery whose deadline passed while it waited for a slot (the event loop was kept
busy, the process stopped) may be another worker's already, and the keeper's renewal may
not have run yet: ``confirm`` renews it before its body starts, and a delivery the broker
says is gone is not started (its new holder runs it).

The keeper wakes at least every ``LEASE_TICK_MAX_S``; when it wakes much later than
planned, something blocked the event loop (an async task calling blocking code) and it
says so, because leases could not be renewed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from ..clock import monotonic, utcnow
from ..contract import Broker
from ..errors import LeaseLost, StemError, Unsupported
from .held import SETTLED, Held, HeldSet

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

log = logging.getLogger("stem.worker")

LEASE_TICK_MAX_S = 1.0
LEASE_TICK_MIN_S = 0.01
# A failed renewal (server hiccup) is tried again this soon, bounded by a quarter lease.
RENEW_RETRY_S = 1.0
# The loop is called blocked when the keeper wakes this much later than it asked.
LOOP_LAG_WARN_S = 1.0


class LeaseKeeper:
    """One asyncio task renewing every held lease."""

    def __init__(self, broker: Broker, held: HeldSet, *, on_lost: Callable[[Held], None],
                 metrics: "WorkerMetrics | None" = None) -> None:
        self._broker = broker
        self._metrics = metrics
        self._held = held
        self._on_lost = on_lost
        self._wake = asyncio.Event()
        self.enabled = broker.capabilities.lease_extension
        self.renewals = 0
        self._renewing: dict[Held, asyncio.Task[None]] = {}

    def track(self, held: Held) -> None:
        """A new delivery: make sure the keeper wakes in time for its first renewal."""
        self._wake.set()

    async def extend(self, held: Held, seconds: float) -> datetime:
        """An explicit extension (``ctx.extend_lease``); the keeper continues from it."""
        deadline = await self._broker.extend_lease(held.delivery, seconds)
        held.lease_seconds = max(held.lease_seconds, seconds)
        held.schedule_renewal(deadline)
        self._wake.set()
        return deadline

    async def confirm(self, held: Held) -> bool:
        """Whether ``held`` may start: False when its lease is lost (``lease_lost`` set).
        Costs a renewal only when its deadline has passed; a renewal that fails for another
        reason (the server did not answer) lets it start, the keeper trying on."""
        if held.lease_lost:
            return False
        if not self.enabled or held.lease_expires_at > utcnow():
            return True
        try:
            await self.extend(held, held.lease_seconds)
        except LeaseLost:
            self._lost(held)
            log.warning("the lease of task %s ran out before it started and another consumer holds it now: "
                        "left to that one (was this worker's event loop blocked?)", held.id)
            return False
        except Unsupported:
            self.enabled = False
        except StemError as exc:
            log.warning("could not renew the overdue lease of task %s before starting it: %s", held.id, exc)
        return True

    def _lost(self, held: Held) -> None:
        held.lease_lost = True
        if self._metrics is not None:
            self._metrics.leases_lost.inc()

    async def run(self) -> None:
        if not self.enabled:
            log.warning("the %s broker cannot extend leases: long tasks may be redelivered", self._broker.scheme)
            return
        try:
            await self._schedule()
        finally:
            renewing = list(self._renewing.values())
            for task in renewing:
                task.cancel()
            await asyncio.gather(*renewing, return_exceptions=True)

    async def _schedule(self) -> None:
        while self.enabled:
            now = monotonic()
            for held in self._held:
                if self._due(held) and held.renew_at <= now:
                    task = asyncio.create_task(self._renew(held))
                    self._renewing[held] = task
                    task.add_done_callback(lambda _, h=held: self._renewed(h))
            upcoming = [h.renew_at for h in self._held if self._due(h)]
            delay = min(upcoming, default=now + LEASE_TICK_MAX_S) - monotonic()
            delay = min(LEASE_TICK_MAX_S, max(LEASE_TICK_MIN_S, delay))
            self._wake.clear()
            planned = monotonic() + delay
            try:
                # Not wait_for: on 3.11 it can swallow a cancel that lands as the event fires.
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            lag = monotonic() - planned
            if lag > LOOP_LAG_WARN_S:
                log.warning(
                    "the worker's event loop was blocked for %.1f s (an async task calling blocking code?); "
                    "leases and heartbeats could not be renewed meanwhile - make blocking tasks sync functions",
                    lag,
                )

    def _due(self, held: Held) -> bool:
        """Whether ``held`` needs renewals and has none under way."""
        return held.state != SETTLED and not held.lease_lost and held not in self._renewing

    def _renewed(self, held: Held) -> None:
        self._renewing.pop(held, None)
        self._wake.set()  # plan the next renewal of this delivery

    async def _renew(self, held: Held) -> None:
        try:
            deadline = await self._broker.extend_lease(held.delivery, held.lease_seconds)
        except LeaseLost:
            if held.state != SETTLED:
                self._lost(held)
                self._on_lost(held)
            return
        except Unsupported:
            self.enabled = False
            log.warning("the %s broker refused a lease extension: renewals stop", self._broker.scheme)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not stop renewals, nor spin
            if self._metrics is not None:
                self._metrics.renewal_failures.inc()
            if isinstance(exc, StemError):
                log.warning("could not renew the lease of task %s: %s", held.id, exc)
            else:
                log.exception("unexpected error renewing the lease of task %s", held.id)
            held.renew_at = monotonic() + min(RENEW_RETRY_S, held.lease_seconds / 4.0)
            return
        self.renewals += 1
        if self._metrics is not None:
            self._metrics.renewals.inc()
        held.schedule_renewal(deadline)


__all__ = ["LEASE_TICK_MAX_S", "LOOP_LAG_WARN_S", "LeaseKeeper"]
