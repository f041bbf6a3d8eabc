"""What a worker holds: every delivery from the moment it arrives until it is settled.

A ``Held`` is *reserved* (prefetched, waiting for a concurrency slot) or *active* (its
task body runs). The lease keeper renews both kinds; heartbeats and ``inspect`` list them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterator

from ..clock import monotonic, to_iso, utcnow
from ..envelope import Delivery

RESERVED = "reserved"
ACTIVE = "active"
SETTLED = "settled"


@dataclass(eq=False, slots=True)
class Held:
    """One delivery in the worker's hands."""

    delivery: Delivery
    lease_seconds: float
    lease_expires_at: datetime
    received_at: datetime = field(default_factory=utcnow)
    state: str = RESERVED
    started_at: datetime | None = None
    started_mono: float | None = None
    # The asyncio task running an async body (cancelled on terminate/time limit/shutdown).
    body: "asyncio.Future[Any] | None" = None
    # Why the worker stopped waiting for the body: "revoked", "time-limit", "shutdown".
    cancel_reason: str | None = None
    lease_lost: bool = False
    # The status meta of this run (task, queue, worker, started_at...), reused by progress().
    meta: dict[str, Any] = field(default_factory=dict)
    # The pending write of the running status (awaited before any later status write).
    running_write: "asyncio.Future[Any] | None" = None
    # The asyncio task handling this delivery (cancelled while reserved at shutdown).
    handler: "asyncio.Task[None] | None" = None
    renew_at: float = 0.0

    @property
    def id(self) -> str:
        return self.delivery.envelope.id

    @property
    def name(self) -> str:
        return self.delivery.envelope.name

    @property
    def queue(self) -> str:
        return self.delivery.queue

    def schedule_renewal(self, expires_at: datetime) -> None:
        """Remember the new deadline and renew again at half the lease."""
        self.lease_expires_at = expires_at
        remaining = (expires_at - utcnow()).total_seconds()
        self.renew_at = monotonic() + max(0.0, min(remaining, self.lease_seconds) / 2.0)

    def runtime(self) -> float | None:
        return None if self.started_mono is None else monotonic() - self.started_mono

    def info(self) -> dict[str, Any]:
        """The heartbeat ``inflight`` entry (plus ``state``/``attempt``): JSON-ready."""
        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "started_at": to_iso(self.started_at) if self.started_at else None,
            "lease_expires_at": to_iso(self.lease_expires_at),
            "state": self.state,
            "attempt": self.delivery.envelope.attempt,
        }


class HeldSet:
    """The worker's held deliveries, keyed by receipt (an id can come back redelivered)."""

    def __init__(self) -> None:
        self._items: dict[str, Held] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Held]:
        return iter(list(self._items.values()))

    def add(self, held: Held) -> None:
        self._items[held.delivery.receipt] = held

    def discard(self, held: Held) -> None:
        held.state = SETTLED
        self._items.pop(held.delivery.receipt, None)

    def by_task_id(self, task_id: str) -> list[Held]:
        return [h for h in self._items.values() if h.id == task_id]

    def in_state(self, state: str) -> list[Held]:
        return [h for h in self._items.values() if h.state == state]


def lease_deadline(delivery: Delivery, lease_seconds: float) -> datetime:
    """The delivery's lease deadline, or now + lease when the broker gave none."""
    return delivery.lease_expires_at or utcnow() + timedelta(seconds=lease_seconds)


__all__ = ["ACTIVE", "Held", "HeldSet", "RESERVED", "SETTLED", "lease_deadline"]
