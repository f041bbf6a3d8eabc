"""The ``stem`` command: a Typer app with one module per noun."""

from __future__ import annotations

import typer

from .output import EXIT_CODES_HELP

app = typer.Typer(
    name="stem",
    help=f"Stem: background jobs and the tools to operate them.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each noun module adds its commands to ``app``; imported here so ``stem --help`` lists them.
    from . import worker  # noqa: F401


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
