"""Options shared by every command, and the one place errors become exit codes."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Awaitable, Callable, TypeVar

import typer

from stem_core.errors import BrokerUnavailable, StemError
from stem_core.settings import Settings, load_settings

from .output import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, fail

T = TypeVar("T")

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", envvar="STEM_BROKER_URL", help="Broker URL (default: the embedded SQLite file).", show_envvar=True),
]
BackendOpt = Annotated[
    str | None,
    typer.Option("--backend", envvar="STEM_RESULT_BACKEND_URL", help="Result backend URL (default: the broker URL).", show_envvar=True),
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", envvar="STEM_NAMESPACE", help="Namespace prefixing every key and row.", show_envvar=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, *, option: str = "duration") -> float:
    """``500ms``, ``10s``, ``5m``, ``2h``, ``1d`` or bare seconds -> seconds (exit 2 when bad)."""
    match = _DURATION_RE.match(text or "")
    if match is None:
        fail(f"invalid {option} {text!r}: use e.g. 500ms, 10s, 5m, 2h (a bare number is seconds)", EXIT_USAGE)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def settings_from(broker: str | None, backend: str | None, namespace: str | None) -> Settings:
    """Effective settings from the global options (exit 2 on a bad namespace)."""
    try:
        return load_settings(broker=broker, backend=backend, namespace=namespace)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run one command's coroutine; expected failures become one line and an exit code.

    ``ValueError`` family (bad input, bad URL) -> 2; ``BrokerUnavailable`` -> 3; any
    other ``StemError`` -> 1.
    """
    try:
        return asyncio.run(main())
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        fail("interrupted", EXIT_FAILED)
    except BrokerUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except StemError as exc:
        fail(str(exc), EXIT_FAILED)


def to_jsonable(value: Any) -> Any:
    """``to_dict()`` for Stem value types, recursively for lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value
