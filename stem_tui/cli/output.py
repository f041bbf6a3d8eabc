"""The only module of the CLI that prints. Exit codes live here too.

Exit codes (documented in ``stem --help`` and the README):
  0 ok; 1 the operation ran but failed or found a problem (no replies, check failed,
  not found); 2 bad usage or input; 3 cannot reach the broker or backend.

Everything shown passes through two filters: ``neutralise`` (``stem_tui/text.py``, shared
with the TUI: C0/C1 controls, DEL, NUL, bidi overrides and other invisible format
characters become visible escapes; Rich markup is never interpreted because data goes
into ``Text`` objects) and ``scrub`` (the passwords of the configured URLs become
``***``). JSON is ASCII-escaped, so no raw control byte from data can reach the terminal
whatever the format.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from typing import Any, Callable, Iterable, Iterator, NoReturn
from stem_core.settings import redact_text, url_secrets

from ..text import neutralise

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 ran but failed or found a problem (no replies, check failed, not found); "
    "2 bad usage or input; 3 cannot reach the broker or backend."
)

# Piped output is not wrapped at 80 columns: tables stay one row per line for grep.
PIPE_WIDTH = 220

_secrets: set[str] = set()


# -- secrets --------------------------------------------------------------------------


def register_secret_url(url: str | None) -> None:
    """Remember the secrets of ``url`` (password, secret query values; see
    ``stem_core.settings.url_secrets``) so no output line can show them."""
    if url:
        _secrets.update(url_secrets(url))


def scrub(text: str) -> str:
    return redact_text(text, _secrets)


# -- plain lines ----------------------------------------------------------------------


def _write(stream: Any, text: str) -> None:
    stream.write(scrub(text))
    stream.flush()


def error(message: str) -> None:
    """One neutralised line on stderr."""
    _write(sys.stderr, f"error: {neutralise(message)}\n")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one error line and exit with ``code``."""
    import typer

    error(message)
    raise typer.Exit(code)


def info(message: str) -> None:
    """A plain neutralised line on stdout."""
    _write(sys.stdout, neutralise(message) + "\n")


def plain(text: str) -> None:
    """Our own text (help), printed as is."""
    _write(sys.stdout, text.rstrip("\n") + "\n")


def lines(items: Iterable[object]) -> None:
    """One neutralised line on stdout per item."""
    _write(sys.stdout, "".join(neutralise(item) + "\n" for item in items))


def print_json(data: Any) -> None:
    """One JSON document on stdout (ASCII-escaped: no raw control byte can get through)."""
    _write(sys.stdout, json.dumps(data, ensure_ascii=True, default=str) + "\n")


def print_jsonl(rows: Iterable[Any]) -> None:
    """One compact JSON object per line."""
    _write(sys.stdout, "".join(json.dumps(r, ensure_ascii=True, default=str, separators=(",", ":")) + "\n" for r in rows))


def emit(data: Any, fmt: str, render: Callable[[], Any], rows: Callable[[], list[Any]] | None = None) -> None:
    """Print one result as a table (``render()`` gives a Rich renderable), a JSON document
    (``data``) or JSON lines (``rows()``, default: ``data`` as one line)."""
    if fmt == "json":
        print_json(data)
    elif fmt == "jsonl":
        print_jsonl(rows() if rows is not None else [data])
    else:
        print_renderable(render())


# -- Rich -----------------------------------------------------------------------------


def is_terminal(stream: Any = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


ENV_NO_COLOR = "NO_COLOR"
ENV_FORCE_COLOR = "FORCE_COLOR"


def no_color() -> bool:
    """``NO_COLOR`` set to any non-empty value (no-color.org): no colour and no other
    styling escape (bold, dim) anywhere, even on a terminal or with ``FORCE_COLOR``."""
    return os.environ.get(ENV_NO_COLOR, "") != ""


def styled(stream: Any = None) -> bool:
    """Whether output on ``stream`` carries styles: a terminal, or ``FORCE_COLOR``
    (non-empty) when piped; never with ``NO_COLOR``."""
    if no_color():
        return False
    return is_terminal(stream) or os.environ.get(ENV_FORCE_COLOR, "") != ""


def console(stream: Any = None, *, buffer: io.StringIO | None = None) -> Any:
    """A Console that never interprets markup or highlights data; styled only on a
    terminal (or with ``FORCE_COLOR``) and never with ``NO_COLOR``. With ``buffer`` it
    renders there, sized and styled as for ``stream``. A terminal under ``NO_COLOR`` is
    still a terminal (``--watch`` redraws in place), only without any SGR escape."""
    import shutil

    from rich.console import Console

    stream = sys.stdout if stream is None else stream
    terminal = is_terminal(stream)
    width = shutil.get_terminal_size().columns if terminal else PIPE_WIDTH
    # color_system=None: Rich emits no SGR at all (bold, dim too), which its own
    # no_color (colours only) would still print.
    return Console(
        file=buffer if buffer is not None else stream, highlight=False, markup=False, emoji=False, soft_wrap=False,
        width=width, force_terminal=terminal or styled(stream), no_color=not styled(stream),
        color_system="auto" if styled(stream) else None,
    )


def print_renderable(renderable: Any) -> None:
    """Render to text first so ``scrub`` sees every character, then write it."""
    buffer = io.StringIO()
    console(buffer=buffer).print(renderable)
    _write(sys.stdout, buffer.getvalue())


# -- watching -------------------------------------------------------------------------


class Watch:
    """Show successive frames: in place on a terminal, one after another when piped,
    one JSON line per frame with ``jsonl``."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._live: Any = None

    def __enter__(self) -> "Watch":
        if self.fmt == "table" and is_terminal():
            from rich.live import Live

            self._live = Live(console=console(), auto_refresh=False, transient=False, redirect_stdout=False)
            self._live.start()
        return self

    def show(self, data: Any, render: Callable[[], Any]) -> None:
        if self.fmt in ("json", "jsonl"):
            print_jsonl([data])
        elif self._live is not None:
            self._live.update(render(), refresh=True)
        else:
            print_renderable(render())

    def problem(self, message: str) -> None:
        """A fetch failed: a JSON line ``{"error": ...}``, else a red line (in place on a terminal)."""
        if self.fmt in ("json", "jsonl"):
            print_jsonl([{"error": scrub(message)}])
            return
        from rich.text import Text

        line = Text(f"unreachable: {neutralise(message)}", style="bold red")
        if self._live is not None:
            self._live.update(line, refresh=True)
        else:
            print_renderable(line)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()


# -- logging ------------------------------------------------------------------------

ENV_LOGLEVEL = "STEM_LOGLEVEL"
# Adapter and ops loggers; an operator command shows only their errors unless asked.
LIBRARY_LOGGERS = ("stem", "stem_core")
DEFAULT_CLI_LOGLEVEL = "error"


class _LineHandler(logging.Handler):
    """Each record as one neutralised ``level: message`` line on (the current) stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _write(sys.stderr, f"{record.levelname.lower()}: {neutralise(record.getMessage())}\n")
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def quiet_library_logs(level_name: str | None) -> None:
    """Library logs for an operator command: errors only (``STEM_LOGLEVEL`` to change it),
    as single neutralised lines. Not for ``stem worker``, which configures its own."""
    level = getattr(logging, (level_name or DEFAULT_CLI_LOGLEVEL).upper(), None)
    if not isinstance(level, int):
        level = logging.ERROR
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not any(isinstance(h, _LineHandler) for h in logger.handlers):
            logger.addHandler(_LineHandler())


# -- interaction ----------------------------------------------------------------------


def stdin_is_terminal() -> bool:
    return is_terminal(sys.stdin)


def confirm(question: str, *, yes: bool) -> None:
    """Go on when ``yes`` or the operator types y; exit 1 on no. Off a terminal, refuse
    without ``--yes`` (exit 2): a script must say it means it."""
    if yes:
        return
    if not stdin_is_terminal():
        fail(f"{question}: refusing without --yes (stdin is not a terminal)", EXIT_USAGE)
    _write(sys.stderr, f"{neutralise(question)}? [y/N] ")
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        fail("cancelled; nothing changed", EXIT_FAILED)


@contextlib.contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal; otherwise a silent callback."""
    if not is_terminal(sys.stderr) or total <= 0:
        yield lambda done, total_: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(neutralise(label)), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console(sys.stderr), transient=False)
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda done, total_: bar.update(task, completed=done)


__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Watch",
    "confirm",
    "console",
    "emit",
    "error",
    "fail",
    "info",
    "is_terminal",
    "lines",
    "plain",
    "neutralise",
    "no_color",
    "print_json",
    "print_jsonl",
    "print_renderable",
    "quiet_library_logs",
    "progress",
    "register_secret_url",
    "scrub",
    "styled",
]
