"""``stem demo``: workers and a producer on the embedded SQLite default (or any
``--broker``), with ``stem tui`` open on them; everything it started stops on exit.

    stem demo                               # the TUI on a live, slightly broken system
    stem demo --no-tui --duration 10s       # headless: run, print the queues, stop

The demo's data lives in namespace ``demo`` unless ``--namespace``/``STEM_NAMESPACE`` says
otherwise, so it never mixes with real queues on the same broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Iterator

import typer

from stem_core.settings import ENV_NAMESPACE, Settings, redact_url

from .common import open_ops, run
from .options import CommonOptions, common_options, settings_from
from .output import EXIT_FAILED, EXIT_USAGE, emit, fail, info
from .parsing import parse_duration

DEMO_NAMESPACE = "demo"
DEFAULT_RATE = 20.0
DEFAULT_WORKERS = 3
MAX_WORKERS = 16
# Headless runs check on the children this often.
WATCH_S = 0.25


async def prepare(settings: Settings, *, fresh: bool) -> None:
    """Fail fast (exit 3) before starting processes when the broker or backend is down (or
    does not answer); with ``fresh``, empty the demo's queues (pending, delayed, dead) so
    each demo starts clean."""
    from stem_tui.demo_app import QUEUES

    async with open_ops(settings) as ops:
        if not fresh:
            return
        broker = ops.broker
        for queue in QUEUES:
            await broker.purge(queue)
            if broker.capabilities.dead_letters:
                await broker.purge_dead_letters(queue)


class Stop:
    """The signal that asked the demo to stop, if any (see ``handling``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
        self._event.set()

    @contextlib.contextmanager
    def handling(self, *, headless: bool) -> Iterator["Stop"]:
        """What SIGINT and SIGTERM do while the demo's processes run. Headless, both only
        set this flag, which the demo checks every ``WATCH_S``: an exception a signal
        raises is dropped by Python when it lands in a finalizer (a weakref callback,
        ``__del__``), and CI saw a Ctrl-C right after start leave the demo running out its
        whole duration. Under the TUI, Ctrl-C is the TUI's key and SIGTERM exits at once
        (``SystemExit``, so the TUI restores the terminal)."""
        signals = (signal.SIGINT, signal.SIGTERM) if headless else (signal.SIGTERM,)
        handler = self._on_signal if headless else _exit_on_signal
        previous = {sig: signal.signal(sig, handler) for sig in signals}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def summary(settings: Settings) -> None:
    from . import views

    async def read() -> None:
        async with open_ops(settings) as ops:
            overview = await ops.overview(sample_interval=0)
        emit(overview.to_dict(), "table", lambda: views.overview(overview))

    run(read)


@common_options(output=False)
def demo(
    no_tui: Annotated[bool, typer.Option("--no-tui", help="Run headless (no TUI): for scripts and tests.")] = False,
    duration: Annotated[str | None, typer.Option("--duration", help="Stop after this long, e.g. 10s (default: when the TUI quits, or Ctrl-C).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=MAX_WORKERS, help="Worker processes to start.")] = DEFAULT_WORKERS,
    rate: Annotated[float, typer.Option("--rate", min=0.1, help="Tasks per second the producer enqueues on average.")] = DEFAULT_RATE,
    fresh: Annotated[bool, typer.Option("--fresh/--keep", help="Empty the demo queues first.")] = True,
    read_only: Annotated[bool, typer.Option("--read-only", help="Open the TUI read-only.")] = False,
    low_colour: Annotated[bool, typer.Option("--low-colour", "--low-color", help="16 colours and ASCII sparklines.")] = False,
    *,
    opts: CommonOptions,
) -> None:
    """Start workers and a producer and watch them in the TUI; stops everything it started on exit."""
    seconds = parse_duration(duration, option="--duration") if duration else None
    if no_tui and seconds is None:
        fail("--no-tui needs --duration (e.g. --duration 30s)", EXIT_USAGE)
    if not no_tui:
        from .tui import require_tui

        require_tui("stem demo (or run it with --no-tui)")
    namespace = opts.namespace or os.environ.get(ENV_NAMESPACE) or DEMO_NAMESPACE
    settings = settings_from(opts.broker, opts.backend, namespace)
    run(lambda: prepare(settings, fresh=fresh))
    from stem_tui.demo_fleet import running

    log_dir = Path(tempfile.mkdtemp(prefix="stem-demo-"))
    info(f"stem demo: {workers} worker(s) and a producer on {redact_url(settings.broker_url)} "
         f"(namespace {settings.namespace}); logs in {log_dir}")
    crashed: list[str] = []
    fleet = None
    stop = Stop()
    try:
        with stop.handling(headless=no_tui), running(settings, log_dir, workers=workers, rate=rate) as fleet:
            info(f"stem demo: started pids {' '.join(str(p) for p in fleet.pids)}")
            if no_tui:
                deadline = time.monotonic() + (seconds or 0.0)
                while not stop.is_set() and not fleet.dead():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    stop.wait(min(WATCH_S, left))
                if not stop.is_set():
                    summary(settings)  # while the workers still run: the live picture
                # Ctrl-C or SIGTERM: stop at once, without the summary (it reads the broker)
            else:
                _run_tui_for(settings, seconds, read_only=read_only, low_colour=low_colour)
            crashed = fleet.dead()
    finally:
        if fleet is not None:
            info(f"stem demo: stopped {len(fleet.children)} process(es)")
    if stop.signum == signal.SIGTERM:
        raise SystemExit(128 + signal.SIGTERM)
    if crashed:
        fail(f"demo process(es) exited early: {', '.join(crashed)}; see the logs in {log_dir}", EXIT_FAILED)


def _run_tui_for(settings: Settings, seconds: float | None, *, read_only: bool, low_colour: bool) -> None:
    from stem_tui.app import StemTui
    from stem_tui.source import DataSource

    from .tui import cli_context

    source = DataSource.from_settings(settings, interval=1.0)
    StemTui(source, read_only=read_only, low_colour=low_colour, cli_context=cli_context(settings), exit_after=seconds).run()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


__all__ = ["DEMO_NAMESPACE", "register"]
