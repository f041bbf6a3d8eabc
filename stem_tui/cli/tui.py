"""``stem tui``: the terminal UI. Textual is imported only when the command runs, so the
rest of the CLI starts without it."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from stem_core.settings import Settings, redact_url

from .options import CommonOptions, common_options
from .output import EXIT_USAGE, fail
from .parsing import parse_duration

ENV_READ_ONLY = "STEM_READ_ONLY"
ENV_LOW_COLOUR = "STEM_TUI_LOW_COLOUR"
DEFAULT_REFRESH = "2s"
# The TUI never polls faster than this.
MIN_REFRESH_S = 0.5


def cli_context(settings: Settings) -> list[str]:
    """The options an equivalent ``stem`` command needs to reach the same broker: the
    ones given as flags (the environment is the same for both)."""
    out: list[str] = []
    if settings.broker_source == "flag":
        out += ["--broker", redact_url(settings.broker_url)]
    if settings.backend_source == "flag":
        out += ["--backend", redact_url(settings.backend_url)]
    if settings.namespace_source == "flag":
        out += ["--namespace", settings.namespace]
    return out


TUI_EXTRA = "pip install 'stem-queue[tui]'"


def require_tui(command: str = "stem tui") -> None:
    """A plain ``stem-queue[cli]`` install has no Textual: say which extra to install
    (exit 2) before anything starts, instead of a ``ModuleNotFoundError`` traceback."""
    import importlib.util

    if importlib.util.find_spec("textual") is None:
        fail(f"{command} needs its extra: {TUI_EXTRA}", EXIT_USAGE)


def check_urls(settings: Settings) -> None:
    """A URL that can never work (unknown scheme, bad option) is a usage error now, not a
    banner retrying forever; an unreachable server is the banner's job."""
    from stem_core.adapters import backend_class, broker_class

    try:
        broker_class(settings.broker_url).from_url(settings.broker_url.strip(), namespace=settings.namespace)
        backend_class(settings.backend_url).from_url(settings.backend_url.strip(), namespace=settings.namespace)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def run_tui(settings: Settings, *, read_only: bool, low_colour: bool, refresh: float, stale_after: float | None) -> None:
    """Build the app over ``settings`` and run it in this terminal (blocks until quit)."""
    from stem_tui.app import StemTui
    from stem_tui.source import DataSource

    source = DataSource.from_settings(settings, interval=refresh, stale_after=stale_after)
    app = StemTui(source, read_only=read_only, low_colour=low_colour, cli_context=cli_context(settings))
    app.run()


@common_options(output=False, stale_after=True)
def tui(
    read_only: Annotated[bool, typer.Option("--read-only", envvar=ENV_READ_ONLY, show_envvar=True,
                                            help="Hide every action: look, never touch.")] = False,
    refresh: Annotated[str, typer.Option("--refresh", help="Refresh interval, e.g. 2s, 5s (+/- change it live).")] = DEFAULT_REFRESH,
    low_colour: Annotated[bool, typer.Option("--low-colour", "--low-color", envvar=ENV_LOW_COLOUR, show_envvar=True,
                                             help="16 ANSI colours and ASCII sparklines, for poor terminals and slow links.")] = False,
    *,
    opts: CommonOptions,
) -> None:
    """Watch queues, leases and workers live; fix a stuck queue without leaving it."""
    interval = parse_duration(refresh, option="--refresh")
    if interval < MIN_REFRESH_S:
        fail(f"--refresh must be at least {MIN_REFRESH_S:g}s", EXIT_USAGE)
    stale = opts.stale_seconds()
    settings = opts.settings()
    check_urls(settings)
    require_tui()
    if not os.isatty(1):
        fail("stem tui needs a terminal (use `stem inspect ... --watch` in scripts)", EXIT_USAGE)
    run_tui(settings, read_only=read_only, low_colour=low_colour, refresh=interval, stale_after=stale)


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)


__all__ = ["ENV_READ_ONLY", "TUI_EXTRA", "cli_context", "register", "require_tui", "run_tui"]
