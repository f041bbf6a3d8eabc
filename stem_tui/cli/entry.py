"""The ``stem`` console script and ``python -m stem_tui``: a shim that needs nothing but
the standard library and ``stem_core``.

A plain ``pip install stem-queue`` (no extras) installs the ``stem`` script too, but not
Typer and Rich, which the command line is written with. Instead of a
``ModuleNotFoundError`` traceback, ``stem`` then prints one line naming the extra to
install and exits with ``EXIT_MISSING_EXTRA`` (2, as for bad usage: nothing was tried).
``stem --version`` answers without them (and without importing them: it is fast).
"""

from __future__ import annotations

import sys

# The distributions the CLI's modules import at their top (the ``cli`` extra; Typer
# brings click's code vendored as ``typer._click``).
CLI_MODULES = ("typer", "rich", "click", "shellingham")
MISSING_EXTRA = "stem: the command line needs its extra: pip install 'stem-queue[cli]'"
EXIT_MISSING_EXTRA = 2


def version_line() -> str:
    """What ``stem --version`` prints (the one version: ``stem_core.version``)."""
    from stem_core.version import __version__

    return f"stem {__version__}"


def _is_missing_cli_dependency(exc: ImportError) -> bool:
    name = getattr(exc, "name", None) or ""
    return isinstance(exc, ModuleNotFoundError) and name.split(".")[0] in CLI_MODULES


def main() -> None:
    """Run the command line, or say which extra it needs."""
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(version_line() + "\n")
        sys.stdout.flush()
        sys.exit(0)
    try:
        from . import main as cli

        cli._register()  # every command module: a missing dependency shows here, not mid-command
    except ImportError as exc:
        if not _is_missing_cli_dependency(exc):
            raise
        sys.stderr.write(MISSING_EXTRA + "\n")
        sys.stderr.flush()
        sys.exit(EXIT_MISSING_EXTRA)
    cli.main()


__all__ = ["CLI_MODULES", "EXIT_MISSING_EXTRA", "MISSING_EXTRA", "main", "version_line"]
