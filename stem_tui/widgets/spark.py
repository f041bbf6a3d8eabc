"""Sparklines as one line of text, so they fit in a table cell and diff like any text."""

from __future__ import annotations

from typing import Sequence

# Eight heights of block elements; the ASCII ramp is for terminals without them (low-colour mode).
BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_RAMP = "_.-~=+*#"
# A sparkline cell shows this many most recent points.
SPARK_POINTS = 8


def sparkline(values: Sequence[float | None], *, width: int = SPARK_POINTS, ascii_only: bool = False) -> str:
    """The last ``width`` values as bar heights scaled to their own maximum; unknown
    values (no rate yet) are blank, a flat zero is the lowest bar."""
    ramp = ASCII_RAMP if ascii_only else BLOCKS
    points = list(values)[-width:]
    known = [v for v in points if v is not None]
    top = max(known, default=0.0)
    out = []
    for value in points:
        if value is None:
            out.append(" ")
        elif top <= 0:
            out.append(ramp[0])
        else:
            out.append(ramp[min(len(ramp) - 1, int(max(0.0, value) / top * (len(ramp) - 1) + 0.5))])
    return "".join(out).rjust(width)


__all__ = ["ASCII_RAMP", "BLOCKS", "SPARK_POINTS", "sparkline"]
