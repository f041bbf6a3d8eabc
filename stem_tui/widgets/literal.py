"""Text from data, shown literally.

Everything that comes from an envelope, a heartbeat or an audit record goes through
``literal``: control characters become visible escapes (``neutralise``, shared with the
CLI) and the result is a Rich ``Text``, which Textual never parses for markup. A plain
``str`` handed to a ``DataTable`` or a ``Static`` *is* parsed as markup, so nothing here
returns one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.text import Text

from stem_core.clock import parse_iso, to_iso
from stem_core.ops import text as words
from ..text import neutralise

# Table cells cut longer text to this many characters (the detail panels show it whole).
CELL_MAX_CHARS = 48
ELLIPSIS = "…"


def clean(value: object, limit: int | None = None) -> str:
    """``value`` as neutralised text, cut to ``limit`` characters; ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        raw = to_iso(value)
    elif isinstance(value, str):
        raw = value
    elif isinstance(value, (dict, list)):
        raw = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    else:
        raw = str(value)
    out = neutralise(raw)
    if limit is not None and len(out) > limit:
        return out[: max(1, limit - 1)] + ELLIPSIS
    return out


def literal(value: object, style: str = "", limit: int | None = CELL_MAX_CHARS) -> Text:
    """A ``Text`` of ``value`` that no markup or escape sequence inside it can change."""
    return Text(clean(value, limit), style=style, no_wrap=True, overflow="ellipsis")


def block(value: object, style: str = "") -> Text:
    """Like ``literal`` for multi-line panels: newlines kept, everything else neutralised."""
    if value is None:
        return Text("-", style=style)
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2, default=str, sort_keys=True)
    return Text("\n".join(neutralise(line) for line in raw.split("\n")), style=style)


def age(seconds: float | None) -> str:
    """An age or a time left in whole seconds at least ("0s", "12s", "3m 5s"): below a
    second the digits would only churn the screen on every poll."""
    if seconds is not None and abs(seconds) < 1.0:
        return "0s"
    return words.duration(seconds)


def since(raw: Any, now: datetime) -> float | None:
    """Seconds from the ISO time ``raw`` (a field of data) to ``now``; None when ``raw`` is
    missing or not a time."""
    if not isinstance(raw, str):
        return None
    try:
        return (now - parse_iso(raw)).total_seconds()
    except ValueError:
        return None


def rate(per_second: float | None) -> str:
    return words.rate(per_second)


def short_id(task_id: str, length: int = 8) -> str:
    """The tail of a UUID v7 (its head is a timestamp shared by neighbours)."""
    cleaned = clean(task_id)
    return cleaned if len(cleaned) <= length else ELLIPSIS + cleaned[-(length - 1):]


def field(data: dict[str, Any], *path: str) -> Any:
    """``data[path[0]][path[1]]...`` or None."""
    value: Any = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


__all__ = ["CELL_MAX_CHARS", "age", "block", "clean", "field", "literal", "rate", "short_id", "since"]
