"""Options shared by every command, input parsing, and the one place errors become exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, TypeVar

import typer

from stem_core.adapters import connect_backend, connect_broker
from stem_core.clock import parse_iso, utcnow
from stem_core.errors import BackendUnavailable, BrokerUnavailable, StemError
from stem_core.ops import ActionResult, Ops
from stem_core.settings import ENV_BACKEND_URL, ENV_BROKER_URL, ENV_NAMESPACE, Settings, load_settings, redact_url

from . import views
from .output import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, Watch, confirm, emit, fail, register_secret_url

T = TypeVar("T")

ENV_DEBUG = "STEM_DEBUG"
# Connecting to a server that does not answer (a black-holed host) gives up after this.
CONNECT_TIMEOUT_S = 10.0

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
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per line (per row; per refresh with --watch).")]
WatchOpt = Annotated[bool, typer.Option("--watch", help="Refresh in place; `--watch 5s` sets the interval (default 2s).")]
IntervalOpt = Annotated[str, typer.Option("--interval", help="Refresh interval for --watch, e.g. 500ms, 2s.", hidden=True)]
StaleAfterOpt = Annotated[
    str | None,
    typer.Option("--stale-after", envvar="STEM_STALE_AFTER", show_envvar=True,
                 help="A worker whose heartbeat is older than this counts as dead (default 30s)."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking (required off a terminal).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the count and a sample; change nothing.")]
FramesOpt = Annotated[int | None, typer.Option("--frames", min=1, help="With --watch: stop after this many refreshes.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why: kept in the audit log.")]

DEFAULT_WATCH_INTERVAL = "2s"
# --watch never polls faster than this.
MIN_WATCH_INTERVAL_S = 0.5

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def is_duration(text: str) -> bool:
    return _DURATION_RE.match(text or "") is not None


def parse_duration(text: str, *, option: str = "duration") -> float:
    """``500ms``, ``10s``, ``5m``, ``2h``, ``1d`` or bare seconds -> seconds (exit 2 when bad)."""
    match = _DURATION_RE.match(text or "")
    if match is None:
        fail(f"invalid {option} {text!r}: use e.g. 500ms, 10s, 5m, 2h (a bare number is seconds)", EXIT_USAGE)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_time(text: str, *, option: str) -> datetime:
    """An ISO-8601 time, or a duration meaning that long ago (``--since 1h``)."""
    if is_duration(text):
        return utcnow() - timedelta(seconds=parse_duration(text, option=option))
    try:
        return parse_iso(text)
    except ValueError:
        fail(f"invalid {option} {text!r}: use an ISO-8601 time (2026-01-02T03:04:05Z) or a duration ago (1h)", EXIT_USAGE)


def parse_json_object(text: str, *, option: str) -> dict[str, Any]:
    """A JSON object from the command line (exit 2 with the parser's reason when bad)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"invalid JSON in {option}: {exc}", EXIT_USAGE)
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
        except ValueError:
            out[key] = raw
    return out


def output_format(json_out: bool, jsonl_out: bool) -> str:
    if json_out and jsonl_out:
        fail("choose --json or --jsonl, not both", EXIT_USAGE)
    return "json" if json_out else "jsonl" if jsonl_out else "table"


def watch_interval(watch: bool, interval: str, fmt: str) -> float | None:
    """Seconds between refreshes, or None without ``--watch``."""
    if not watch:
        return None
    if fmt == "json":
        fail("--watch prints a stream: use --jsonl (one JSON object per refresh), not --json", EXIT_USAGE)
    return max(MIN_WATCH_INTERVAL_S, parse_duration(interval, option="--watch interval"))


def settings_from(broker: str | None, backend: str | None, namespace: str | None) -> Settings:
    """Effective settings from the global options (exit 2 on a bad namespace)."""
    # Typer fills an option from its STEM_* twin; hand such values back as "unset" so the
    # settings name the variable, not a flag, as their source.
    env = os.environ
    broker = None if broker is not None and broker == env.get(ENV_BROKER_URL) else broker
    backend = None if backend is not None and backend == env.get(ENV_BACKEND_URL) else backend
    namespace = None if namespace is not None and namespace == env.get(ENV_NAMESPACE) else namespace
    try:
        settings = load_settings(broker=broker, backend=backend, namespace=namespace)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    register_secret_url(settings.broker_url)
    register_secret_url(settings.backend_url)
    return settings


async def _connect(factory: Callable[[], Awaitable[T]], label: str, url: str, error: type[BrokerUnavailable]) -> T:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            return await factory()
    except TimeoutError:
        raise error(f"cannot reach the {label} at {redact_url(url)}: no answer within {CONNECT_TIMEOUT_S:.0f} s") from None


@contextlib.asynccontextmanager
async def open_ops(settings: Settings, *, stale_after: str | None = None) -> AsyncIterator[Ops]:
    """Connected broker and backend wrapped in ``Ops``; both closed on exit."""
    stale = parse_duration(stale_after, option="--stale-after") if stale_after else None
    broker = await _connect(lambda: connect_broker(settings.broker_url, namespace=settings.namespace), "broker",
                            settings.broker_url, BrokerUnavailable)
    try:
        backend = await _connect(lambda: connect_backend(settings.backend_url, namespace=settings.namespace),
                                 "result backend", settings.backend_url, BackendUnavailable)
        try:
            yield Ops(broker, backend, stale_after=stale) if stale else Ops(broker, backend)
        finally:
            await backend.close()
    finally:
        await broker.close()


EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: ``uvloop`` (exit 2 when not installed), ``asyncio``
    (the standard loop: None), or ``auto``, uvloop when it is installed (as uvicorn does)."""
    if name not in EVENT_LOOPS:
        fail(f"--loop must be one of {', '.join(EVENT_LOOPS)}, got {name!r}", EXIT_USAGE)
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            fail("--loop uvloop: uvloop is not installed (pip install 'stem-queue[fast]')", EXIT_USAGE)
        return None
    return uvloop.new_event_loop


def run(main: Callable[[], Awaitable[T]], *, interrupt_ok: bool = False,
        loop: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """Run one command's coroutine; expected failures become one line and an exit code.

    ``BrokerUnavailable`` -> 3; ``ValueError`` family (bad input, bad URL) -> 2; any other
    ``StemError`` -> 1; anything else is a bug: one line too, the traceback only with
    ``STEM_DEBUG=1``. Ctrl-C exits 1, or 0 with ``interrupt_ok`` (the way out of --watch).
    ``loop`` makes the event loop (``loop_factory``); None is asyncio's own.
    """
    try:
        with asyncio.Runner(loop_factory=loop) as runner:
            return runner.run(main())
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if interrupt_ok:
            raise typer.Exit(0) from None
        fail("interrupted", EXIT_FAILED)
    except BrokerUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except StemError as exc:
        fail(str(exc), EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get(ENV_DEBUG) == "1":
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set {ENV_DEBUG}=1 for the traceback)", EXIT_FAILED)


async def present(
    fetch: Callable[[], Awaitable[T]],
    data: Callable[[T], Any],
    render: Callable[[T], Any],
    fmt: str,
    interval: float | None,
    rows: Callable[[T], list[Any]] | None = None,
    frames: int | None = None,
) -> T:
    """Fetch and print once, or with ``interval`` keep refreshing (``frames`` times, or
    until Ctrl-C). Returns the last value fetched."""
    if interval is None:
        value = await fetch()
        emit(data(value), fmt, lambda: render(value), (lambda: rows(value)) if rows is not None else None)
        return value
    shown = 0
    with Watch(fmt) as screen:
        while True:
            try:
                value = await fetch()
            except BrokerUnavailable as exc:
                # A watch outlives a broker restart: say so, keep trying at the same pace.
                screen.problem(f"{exc} (retrying every {interval:g}s)")
                await asyncio.sleep(interval)
                continue
            screen.show(data(value), lambda: render(value))
            shown += 1
            if frames is not None and shown >= frames:
                return value
            await asyncio.sleep(interval)


def read_and_show(
    fetch: Callable[[Ops], Awaitable[T]],
    data: Callable[[T], Any],
    render: Callable[[T], Any],
    *,
    rows: Callable[[T], list[Any]] | None = None,
    json_out: bool,
    jsonl_out: bool,
    broker: str | None,
    backend: str | None,
    namespace: str | None,
    watch: bool = False,
    interval: str = DEFAULT_WATCH_INTERVAL,
    frames: int | None = None,
    stale_after: str | None = None,
) -> T:
    """The whole of a read command: check the output options, connect, ``present`` what
    ``fetch(ops)`` returns (once, or refreshed with ``--watch``; Ctrl-C then exits 0), and
    return the last value fetched."""
    fmt = output_format(json_out, jsonl_out)
    every = watch_interval(watch, interval, fmt)
    settings = settings_from(broker, backend, namespace)

    async def main() -> T:
        async with open_ops(settings, stale_after=stale_after) as ops:
            return await present(lambda: fetch(ops), data, render, fmt, every, rows=rows, frames=frames)

    return run(main, interrupt_ok=every is not None)


def preview_then_act(
    act: Callable[[Ops, bool, list[str] | None], Awaitable[ActionResult]],
    question: Callable[[ActionResult], str],
    verb: str,
    *,
    ids: list[str] | None = None,
    dry_run: bool,
    yes: bool,
    fmt: str,
    settings: Settings,
    stale_after: str | None = None,
) -> None:
    """The whole of a repair command: ``act(ops, dry_run, ids)`` once as a dry run; stop
    there with ``dry_run`` or nothing to do; else confirm and act for real, on the ids the
    preview listed when it lists them (so the confirmed count is an upper bound), else on
    ``ids``. Prints the result."""

    async def main() -> None:
        async with open_ops(settings, stale_after=stale_after) as ops:
            result = await act(ops, True, ids)
            if not dry_run and result.count > 0:
                confirm(question(result), yes=yes)
                result = await act(ops, False, result.detail.get("ids", ids))
        show(result, verb, fmt)

    run(main)


def show(result: ActionResult, verb: str, fmt: str) -> None:
    """An action's result: a summary with its sample, or JSON (JSON lines: the sample)."""
    emit(result.to_dict(), fmt, lambda: views.action(result, verb), lambda: result.sample)


__all__ = [
    "BackendOpt",
    "BrokerOpt",
    "CONNECT_TIMEOUT_S",
    "DEFAULT_WATCH_INTERVAL",
    "DryRunOpt",
    "FramesOpt",
    "IntervalOpt",
    "JsonOpt",
    "JsonlOpt",
    "NamespaceOpt",
    "ReasonOpt",
    "StaleAfterOpt",
    "WatchOpt",
    "YesOpt",
    "is_duration",
    "open_ops",
    "output_format",
    "parse_duration",
    "parse_json_object",
    "parse_pairs",
    "parse_time",
    "present",
    "preview_then_act",
    "read_and_show",
    "run",
    "settings_from",
    "show",
    "watch_interval",
]
