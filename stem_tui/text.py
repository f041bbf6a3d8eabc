"""Display rules both front ends share, so the CLI and the TUI show data the same way:
``neutralise`` (text from data made safe for a terminal), the style of each verdict, and
how a count the broker knows only approximately, or not at all, is shown.

Neutral ground: it imports neither Typer nor Textual, and both front ends import it.
"""

from __future__ import annotations

import unicodedata

# Categories whose characters are invisible or move the cursor: control, format (bidi
# overrides, zero-width), line and paragraph separators, surrogates.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

# Rich styles per verdict (ANSI colours, so low-colour modes keep them).
VERDICT_STYLES = {
    "idle": "dim", "scheduled": "dim", "steady": "green", "draining": "green", "busy": "cyan",
    "growing": "yellow", "paused": "yellow", "unknown": "",
    "stalled": "bold red", "no-workers": "bold red",
}


def neutralise(value: object) -> str:
    """``value`` as text safe for a terminal: hidden characters become ``\\xNN``/``\\uNNNN``."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x100 and (code < 0x20 or 0x7F <= code <= 0x9F):
            out.append(f"\\x{code:02x}")
        elif unicodedata.category(ch) in _HIDDEN_CATEGORIES:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


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
