"""Display rules both front ends share, so the CLI and the TUI show data the same way:
``neutralise`` (text from data made safe for a terminal; it lives in
``stem_core.safetext`` so the worker's logs use it too), the style of each verdict, and
how a count the broker knows only approximately, or not at all, is shown.

Neutral ground: it imports neither Typer nor Textual, and both front ends import it.
"""

from __future__ import annotations

from stem_core.safetext import neutralise

# Rich styles per verdict (ANSI colours, so low-colour modes keep them).
VERDICT_STYLES = {
    "idle": "dim", "scheduled": "dim", "steady": "green", "draining": "green", "busy": "cyan",
    "growing": "yellow", "paused": "yellow", "unknown": "",
    "stalled": "bold red", "no-workers": "bold red",
}


# A count the broker cannot know (None: RabbitMQ's in-flight count without its management
# API), in a cell and in a sentence.
UNKNOWN_COUNT = "n/a"
INFLIGHT_NA_NOTE = "n/a (needs the management API)"


def approx(value: int | None, approximate: bool = False) -> str | int:
    """A count as shown: ``~N`` when the broker only knows it approximately (SQS), ``n/a``
    when it cannot know it at all (None)."""
    if value is None:
        return UNKNOWN_COUNT
    return f"~{value}" if approximate else value


__all__ = ["INFLIGHT_NA_NOTE", "UNKNOWN_COUNT", "VERDICT_STYLES", "approx", "neutralise"]
