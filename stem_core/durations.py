"""The one grammar for durations and times an operator types (``--since 1h``, a pause
"for 30m" in the TUI): ``500ms``, ``10s``, ``5m``, ``2h``, ``1d`` or bare seconds, and
ISO-8601 times. A duration is at most ten years (``limits.MAX_DURATION_SECONDS``). Bad
input raises ``ValueError`` saying what to type instead; each front
end turns that into its own error (an exit code, a form's error line).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from .clock import parse_iso, utcnow
from .limits import MAX_DURATION_SECONDS

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def is_duration(text: str) -> bool:
    return _DURATION_RE.match(text or "") is not None


def parse_duration(text: str, *, option: str = "duration") -> float:
    """``500ms``, ``10s``, ``5m``, ``2h``, ``1d`` or bare seconds -> seconds (at most ten years)."""
    match = _DURATION_RE.match(text or "")
    if match is None:
        raise ValueError(f"invalid {option} {text!r}: use e.g. 500ms, 10s, 5m, 2h (a bare number is seconds)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= MAX_DURATION_SECONDS:  # also catches inf and nan from a 400-digit number
        shown = text if len(text) <= 24 else text[:21] + "..."
        raise ValueError(f"invalid {option} {shown!r}: at most 10 years ({MAX_DURATION_SECONDS / 86_400:g}d)")
    return seconds


def parse_time(text: str, *, option: str) -> datetime:
    """An ISO-8601 time, or a duration meaning that long ago (``--since 1h``)."""
    if is_duration(text):
        return utcnow() - timedelta(seconds=parse_duration(text, option=option))
    try:
        return parse_iso(text)
    except ValueError:
        raise ValueError(f"invalid {option} {text!r}: use an ISO-8601 time (2026-01-02T03:04:05Z) or a duration "
                         "ago (1h)") from None


__all__ = ["is_duration", "parse_duration", "parse_time"]
