"""Time in Stem: aware UTC datetimes in, ISO-8601 with ``Z`` out, one place to change both."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

UTC = timezone.utc


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """Format as the original Stem does: ``2025-01-02T03:04:05.678Z``.

    Milliseconds when the microseconds are a whole number of them, else six digits.
    Naive datetimes are taken to be UTC.
    """
    tz = value.tzinfo
    if tz is None:
        value = value.replace(tzinfo=UTC)
    elif tz is not UTC:
        value = value.astimezone(UTC)
    # Field formatting, not strftime: this runs several times per task and is 3x faster.
    micros = value.microsecond
    frac = f"{micros // 1000:03d}" if micros % 1000 == 0 else f"{micros:06d}"
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{frac}Z")


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (``Z`` or an offset; naive means UTC) into an aware UTC datetime.

    Raises ``ValueError`` with the offending text when it is not a timestamp.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    # Dart may write up to 9 fractional digits; Python accepts at most 6.
    if "." in raw:
        head, _, rest = raw.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        raw = f"{head}.{(digits + '000000')[:6]}{rest}" if digits else head + rest
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_epoch(seconds: float) -> datetime:
    """An aware UTC datetime from POSIX seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def to_epoch(value: datetime) -> float:
    """POSIX seconds from an aware (or UTC-naive) datetime."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def monotonic() -> float:
    """Seconds on the monotonic clock (for intervals, never for stored times)."""
    return time.monotonic()


class SweepSchedule:
    """When a bounded sweep (a batch of expired entries deleted along with a write) runs
    next: every ``interval_s``, and again at the very next write while the last sweep
    came back full, so a backlog goes batch by batch and never in one long call. Used by
    the Redis prune and the SQLite cleanup; a failed sweep simply waits for the interval."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = float("-inf")  # due at the first write (monotonic() is the host's uptime)

    def due(self) -> bool:
        """True when a sweep should run now (and counts it as started)."""
        now = monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    def make_due(self) -> None:
        self._next = float("-inf")

    def finished(self, full: bool) -> None:
        """The sweep's batch came back ``full``: more may be left, sweep at the next write."""
        if full:
            self.make_due()


def after(seconds: float) -> datetime:
    """``utcnow() + seconds``."""
    return utcnow() + timedelta(seconds=seconds)


__all__ = ["UTC", "SweepSchedule", "after", "from_epoch", "monotonic", "parse_iso", "to_epoch", "to_iso", "utcnow"]
