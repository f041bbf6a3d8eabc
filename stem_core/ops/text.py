"""Short words for numbers in verdicts and summaries ("3m", "1.2k/s").

The core builds these one-line texts so every front end says the same thing; front ends
may format the raw numbers of the models differently.
"""

from __future__ import annotations

SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0


def duration(seconds: float | None) -> str:
    """``"450ms"``, ``"12s"``, ``"3m"``, ``"2h 5m"``, ``"3d 4h"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    value = abs(seconds)
    if value < 1.0:
        return f"{sign}{value * 1000:.0f}ms"
    if value < SECONDS_PER_MINUTE:
        return f"{sign}{value:.0f}s"
    if value < SECONDS_PER_HOUR:
        minutes, secs = divmod(int(value), int(SECONDS_PER_MINUTE))
        return f"{sign}{minutes}m" if minutes >= 10 or secs == 0 else f"{sign}{minutes}m {secs}s"
    if value < SECONDS_PER_DAY:
        hours, rest = divmod(int(value), int(SECONDS_PER_HOUR))
        minutes = rest // int(SECONDS_PER_MINUTE)
        return f"{sign}{hours}h {minutes}m" if minutes else f"{sign}{hours}h"
    days, rest = divmod(int(value), int(SECONDS_PER_DAY))
    hours = rest // int(SECONDS_PER_HOUR)
    return f"{sign}{days}d {hours}h" if hours else f"{sign}{days}d"


def count(value: float) -> str:
    """``"950"``, ``"1.2k"``, ``"3.4M"``."""
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if magnitude >= 10_000:
        return f"{value / 1000:.0f}k"
    if magnitude >= 1000:
        return f"{value / 1000:.1f}k"
    if magnitude >= 10 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.1f}"


def rate(per_second: float | None) -> str:
    """``"12/s"``, ``"0.5/s"``, ``"1.2k/s"``; ``"-"`` for None."""
    if per_second is None:
        return "-"
    if 0 < abs(per_second) < 0.1:
        return f"{per_second * 60:.1f}/min"
    return f"{count(per_second)}/s"


__all__ = ["count", "duration", "rate"]
