"""``TaskContext``: what a task body gets as its first argument.

The same object serves async and sync tasks. ``extend_lease`` and ``progress`` return a
coroutine when called on the event loop (``await ctx.extend_lease(60)``) and block until
done when called from a sync task's thread (``ctx.extend_lease(60)``), through the
worker's one thread bridge.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from ..envelope import Envelope
from ..errors import TaskRevoked
from .held import Held
from .threads import ThreadBridge

ExtendFn = Callable[[Held, float], Awaitable[datetime]]
ProgressFn = Callable[[Held, dict[str, Any]], Awaitable[None]]


class TaskContext:
    """Per-execution context: ids, lease extension, progress and cancellation."""

    __slots__ = ("_held", "_worker_id", "_bridge", "_extend", "_progress")

    def __init__(self, held: Held, *, worker_id: str, bridge: ThreadBridge, extend: ExtendFn, progress: ProgressFn) -> None:
        self._held = held
        self._worker_id = worker_id
        self._bridge = bridge
        self._extend = extend
        self._progress = progress

    @property
    def task_id(self) -> str:
        return self._held.id

    @property
    def attempt(self) -> int:
        return self._held.delivery.envelope.attempt

    @property
    def envelope(self) -> Envelope:
        return self._held.delivery.envelope

    @property
    def queue(self) -> str:
        return self._held.queue

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def lease_expires_at(self) -> datetime:
        return self._held.lease_expires_at

    @property
    def cancelled(self) -> bool:
        """True once the worker gave up on this run (revoked with terminate, time limit,
        shutdown). Sync tasks should check it in long loops: their thread cannot be killed."""
        return self._held.cancel_reason is not None

    def raise_if_cancelled(self) -> None:
        """Raise ``TaskRevoked`` when ``cancelled``."""
        reason = self._held.cancel_reason
        if reason is not None:
            raise TaskRevoked(f"task {self.task_id} was cancelled ({reason})")

    def extend_lease(self, seconds: float | timedelta) -> Any:
        """Move this delivery's lease deadline to now + ``seconds``; returns the deadline.

        Automatic renewal keeps running; use this before a step known to outlast the
        lease. Awaitable on the loop, blocking in a sync task's thread.
        """
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"extend_lease needs positive seconds, got {seconds!r}")
        return self._dispatch(self._extend(self._held, float(value)))

    def progress(self, data: dict[str, Any] | None = None, /, **fields: Any) -> Any:
        """Record progress (a JSON object) in the ``running`` status's ``meta.progress``."""
        merged = dict(data or {})
        merged.update(fields)
        return self._dispatch(self._progress(self._held, merged))

    def _dispatch(self, coro: Awaitable[Any]) -> Any:
        if self._bridge.in_loop_thread():
            return coro
        return self._bridge.call(coro)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<TaskContext {self.envelope.name} id={self.task_id} attempt={self.attempt}>"


__all__ = ["TaskContext"]
