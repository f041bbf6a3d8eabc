"""Waiting for new work: an in-process doorbell per database file.

Idle consumers poll ``PRAGMA data_version`` (see ``SQLiteDatabase.data_version``) with
an adaptive interval; that covers commits by any process. Between polls they sleep on this
doorbell, which every broker or backend on the same file *in this process* rings after
it commits something a waiter may want, so local work is picked up at once instead of
at the next poll. Waiters may live on different event loops or threads.

The doorbell counts its rings: a waiter reads ``rings`` before it looks for work and
passes it to ``wait``, which returns at once if a ring came in between (no lost wake-up).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Callable

from ..._aio import make_waker, resolve


class Doorbell:
    """Rings wake every current waiter, whatever loop it waits on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings = 0
        self._waiters: set[Callable[[], None]] = set()

    @property
    def rings(self) -> int:
        return self._rings

    def ring(self) -> None:
        with self._lock:
            self._rings += 1
            waiters = list(self._waiters)
            self._waiters.clear()
        for wake in waiters:
            wake()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return after ``timeout`` seconds, or sooner if rung since ``rings`` was ``seen``."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        wake = make_waker(fut)
        with self._lock:
            if self._rings != seen:
                return
            self._waiters.add(wake)
        # A bare timer and future: this runs hundreds of times a second per idle
        # consumer, and asyncio.wait costs several times more.
        timer = loop.call_later(timeout, resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            with self._lock:
                self._waiters.discard(wake)


_lock = threading.Lock()
_bells: dict[str, Doorbell] = {}


def doorbell_for(path: str) -> Doorbell:
    """The process-wide doorbell of one database file (by resolved path)."""
    with _lock:
        bell = _bells.get(path)
        if bell is None:
            bell = _bells[path] = Doorbell()
        return bell


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _lock
    _lock = threading.Lock()
    _bells.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


__all__ = ["Doorbell", "doorbell_for"]
