"""The only module of the CLI that prints. Exit codes live here too.

Exit codes (documented in ``stem --help`` and the README):
  0 ok; 1 the operation ran but failed or found a problem (no replies, check failed,
  not found); 2 bad usage or input; 3 cannot reach the broker or backend.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 ran but failed or found a problem (no replies, check failed, not found); "
    "2 bad usage or input; 3 cannot reach the broker or backend."
)


def error(message: str) -> None:
    """One line on stderr."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one error line and exit with ``code``."""
    import typer

    error(message)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=True, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A plain line on stdout."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()
