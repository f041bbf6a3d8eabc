"""What every command does the same way: ``--watch`` pacing, connecting (``open_ops``),
the one place errors become exit codes (``run``), printing a read once or refreshed
(``read_and_show``), and a repair's preview, confirmation and run (``preview_then_act``).
The shared options are in ``options.py``, input parsing in ``parsing.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import typer

from stem_core.errors import BrokerUnavailable, StemError, StorageRejected
from stem_core.ops import ActionResult, Ops
from stem_core.settings import Settings

from . import views
from .options import CommonOptions
from .output import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, Watch, confirm, emit, fail
from .parsing import parse_duration

T = TypeVar("T")

ENV_DEBUG = "STEM_DEBUG"
DEFAULT_WATCH_INTERVAL = "2s"
# --watch never polls faster than this.
MIN_WATCH_INTERVAL_S = 0.5


def watch_interval(watch: bool, interval: str, fmt: str) -> float | None:
    """Seconds between refreshes, or None without ``--watch``."""
    if not watch:
        return None
    if fmt == "json":
        fail("--watch prints a stream: use --jsonl (one JSON object per refresh), not --json", EXIT_USAGE)
    return max(MIN_WATCH_INTERVAL_S, parse_duration(interval, option="--watch interval"))


@contextlib.asynccontextmanager
async def open_ops(settings: Settings, *, stale_after: str | None = None) -> AsyncIterator[Ops]:
    """``Ops`` over the broker and backend of ``settings`` (``--stale-after`` as given);
    both closed on exit."""
    stale = parse_duration(stale_after, option="--stale-after") if stale_after else None
    async with await Ops.open(settings, stale_after=stale) as ops:
        yield ops


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
    except (ValueError, StorageRejected) as exc:
        # StorageRejected: the server refused this input for good (a NUL in PostgreSQL
        # JSON, a value out of range): bad input, and nothing was stored.
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
    opts: CommonOptions,
    *,
    rows: Callable[[T], list[Any]] | None = None,
    watch: bool = False,
    interval: str = DEFAULT_WATCH_INTERVAL,
    frames: int | None = None,
) -> T:
    """The whole of a read command: check the output options, connect, ``present`` what
    ``fetch(ops)`` returns (once, or refreshed with ``--watch``; Ctrl-C then exits 0), and
    return the last value fetched."""
    fmt = opts.fmt()
    every = watch_interval(watch, interval, fmt)
    settings = opts.settings()

    async def main() -> T:
        async with open_ops(settings, stale_after=opts.stale_after) as ops:
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
                frozen = result.detail.ids
                result = await act(ops, False, frozen if frozen is not None else ids)
        show(result, verb, fmt)

    run(main)


def show(result: ActionResult, verb: str, fmt: str) -> None:
    """An action's result: a summary with its sample, or JSON (JSON lines: the sample)."""
    emit(result.to_dict(), fmt, lambda: views.action(result, verb), lambda: result.sample)


__all__ = [
    "DEFAULT_WATCH_INTERVAL",
    "MIN_WATCH_INTERVAL_S",
    "loop_factory",
    "open_ops",
    "present",
    "preview_then_act",
    "read_and_show",
    "run",
    "show",
    "watch_interval",
]
