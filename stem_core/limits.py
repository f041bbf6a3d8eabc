"""Bounds: the one place that says how big anything an operator or a producer hands Stem
may be. The core (envelopes, the broker contract, durations), the adapters, the CLI and
the TUI all check against these, so a number typed at 3 a.m. or a hostile message on the
wire ends in one clear ``ValueError`` (the CLI's exit 2), never an ``OverflowError``, a
stuck worker or a read that blocks a server.

The configurable one, ``STEM_MAX_ENVELOPE_BYTES``, is read in ``settings``.
"""

from __future__ import annotations

import math

# Queue, channel and task names: 1..NAME_MAX_LENGTH characters (queue and channel names
# also keep to letters, digits and ``._-:``; task names may hold any text, shown escaped).
NAME_MAX_LENGTH = 200
# Task ids (``--id``, ``task_id=``, the envelope's ``id``).
ID_MAX_LENGTH = 200

# Durations an operator or a producer gives (delays, timeouts, "since", pause expiries,
# lease lengths, intervals): at most ten years (3,653 days: leap days included).
MAX_DURATION_SECONDS = 3653 * 86_400.0

# Rows one read returns at most (``--limit``, ``peek``, dead-letter pages, audit pages).
MAX_PAGE_LIMIT = 1000
# Messages one repair (replay, purge of dead letters) moves at most per call.
MAX_BATCH_LIMIT = 100_000
# How deep an offset may reach (``--offset``): further than this, page by cursor.
MAX_PAGE_OFFSET = 10_000
# An opaque page cursor (``peek_page``) an adapter hands out is at most this long.
MAX_CURSOR_LENGTH = 512
# Retries a task may ask for (``max_retries``, ``--max-retries``).
MAX_RETRIES = 100_000
# An envelope's ``attempt`` fits the 32-bit integer columns that store it.
MAX_ATTEMPT = 2**31 - 1
# Worker knobs: tasks run at once, deliveries held at once, worker processes.
MAX_CONCURRENCY = 10_000
MAX_PREFETCH = 100_000
MAX_PROCESSES = 1024
# Envelope size when ``STEM_MAX_ENVELOPE_BYTES`` is not set: 1 MiB of encoded JSON.
DEFAULT_MAX_ENVELOPE_BYTES = 1_048_576
# A status write the backend refuses for good (value too long, out of range, constraint)
# is tried this many times (deliveries) before the worker dead-letters the task.
STATUS_WRITE_MAX_TRIES = 3


def check_int(value: object, what: str, low: int, high: int) -> int:
    """``value`` if it is an integer in ``low..high``, else ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer {low}..{high}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be {low}..{high}, got {_short(value)}")
    return value


def check_seconds(value: object, what: str, *, low: float = 0.0, high: float = MAX_DURATION_SECONDS) -> float:
    """``value`` as float seconds if it is a finite number in ``low..high`` (ten years by
    default), else ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise ValueError(f"{what} must be {_seconds(low)}..{_seconds(high)}, got {_short(value)} s")
    return seconds


def check_page(limit: object, offset: object = 0) -> tuple[int, int]:
    """``(limit, offset)`` of one page read: ``0..MAX_PAGE_LIMIT`` and ``0..MAX_PAGE_OFFSET``."""
    return check_int(limit, "limit", 0, MAX_PAGE_LIMIT), check_int(offset, "offset", 0, MAX_PAGE_OFFSET)


def check_task_name(name: object) -> str:
    """``name`` if it is a usable task name: 1..NAME_MAX_LENGTH characters, not blank, no NUL."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("task name must be a non-empty string")
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"task name is {len(name)} characters long: at most {NAME_MAX_LENGTH} are allowed")
    if "\x00" in name:
        # PostgreSQL cannot store it, C tools cut names at it: refused on every broker alike.
        raise ValueError("task name may not contain a NUL character")
    return name


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _seconds(value: float) -> str:
    if value >= MAX_DURATION_SECONDS:
        return "10 years"
    return f"{value:g}"


__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "ID_MAX_LENGTH",
    "MAX_ATTEMPT",
    "MAX_BATCH_LIMIT",
    "MAX_CONCURRENCY",
    "MAX_CURSOR_LENGTH",
    "MAX_DURATION_SECONDS",
    "MAX_PAGE_LIMIT",
    "MAX_PAGE_OFFSET",
    "MAX_PREFETCH",
    "MAX_PROCESSES",
    "MAX_RETRIES",
    "NAME_MAX_LENGTH",
    "STATUS_WRITE_MAX_TRIES",
    "check_int",
    "check_page",
    "check_seconds",
    "check_task_name",
]
