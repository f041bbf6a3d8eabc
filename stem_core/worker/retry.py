"""Retry policy: exponential backoff with jitter, and the exceptions a task raises to steer it.

``Retry`` and ``Reject`` are the task's way to override the default policy (every other
exception is retried while ``attempt < max_retries``)::

    @app.task(max_retries=5)
    def charge(ctx, order: str) -> None:
        if gateway_busy():
            raise Retry(delay=30)           # retry in 30 s (still bounded by max_retries)
        if not valid(order):
            raise Reject("order is invalid")  # no retry: failed + dead letter "rejected"
"""

from __future__ import annotations

import random

from ..settings import RETRY_BASE_SECONDS, RETRY_JITTER_FRACTION, RETRY_MAX_SECONDS


def backoff_seconds(
    attempt: int,
    *,
    base: float = RETRY_BASE_SECONDS,
    maximum: float = RETRY_MAX_SECONDS,
    jitter: float = RETRY_JITTER_FRACTION,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt + 1``: ``min(base * 2**attempt, maximum)``
    minus up to ``jitter`` of it (attempt 0 -> 1.5..2 s with the defaults)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # 2**attempt overflows a float past ~1024; the cap is reached long before.
    raw = base * (2.0 ** min(attempt, 64))
    capped = min(raw, maximum)
    draw = (rng or random).uniform(0.0, jitter)
    return capped * (1.0 - draw)


class Retry(Exception):
    """Raise inside a task to retry it (after ``delay`` seconds, else the backoff).

    It still counts as an attempt: once ``max_retries`` is used up the task fails and is
    dead-lettered with ``max-retries-exhausted``.
    """

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0):
            raise ValueError(f"Retry delay must be seconds >= 0, got {delay!r}")
        self.delay = None if delay is None else float(delay)


class Reject(Exception):
    """Raise inside a task to fail it now, without retries: status ``failed`` and a dead
    letter with reason ``rejected`` (replayable once the cause is fixed)."""


class TimeLimitExceeded(TimeoutError):
    """The task ran longer than its ``time_limit``; it follows the retry policy."""


__all__ = ["Reject", "Retry", "TimeLimitExceeded", "backoff_seconds"]
