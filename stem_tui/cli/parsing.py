"""Input from the command line: durations, times, JSON objects, ``k=v`` pairs. The grammar
is the core's (``stem_core.durations``); here bad input becomes one error line and exit 2."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from stem_core import durations
from stem_core.durations import is_duration

from .output import EXIT_USAGE, fail


def parse_duration(text: str, *, option: str = "duration") -> float:
    """``500ms``, ``10s``, ``5m``, ``2h``, ``1d`` or bare seconds -> seconds (exit 2 when bad)."""
    try:
        return durations.parse_duration(text, option=option)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def parse_time(text: str, *, option: str) -> datetime:
    """An ISO-8601 time, or a duration meaning that long ago (``--since 1h``; exit 2 when bad)."""
    try:
        return durations.parse_time(text, option=option)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def parse_json_object(text: str, *, option: str) -> dict[str, Any]:
    """A JSON object from the command line (exit 2 with the parser's reason when bad)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"invalid JSON in {option}: {exc}", EXIT_USAGE)
    except RecursionError:
        fail(f"invalid JSON in {option}: nested too deeply", EXIT_USAGE)
    if not isinstance(value, dict):
        fail(f"{option} must be a JSON object like '{{\"key\": 1}}', got {type(value).__name__}", EXIT_USAGE)
    return value


def parse_pairs(pairs: list[str] | None, *, option: str = "--arg") -> dict[str, Any]:
    """``k=v`` pairs; ``v`` is JSON when it parses (``n=5`` is 5), else a string."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"invalid {option} {pair!r}: use key=value", EXIT_USAGE)
        try:
            out[key] = json.loads(raw)
        except (ValueError, RecursionError):
            out[key] = raw
    return out


__all__ = ["is_duration", "parse_duration", "parse_json_object", "parse_pairs", "parse_time"]
