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


@app.callback()
def _root() -> None:
    """Stem: background jobs and the tools to operate them."""
    # A callback keeps `stem <command>` a group even while only one command is registered
    # (Typer otherwise runs a lone command as the root and rejects its name).


def _register() -> None:
    """Each noun module exposes ``register(app)``; listed here so ``stem --help`` shows them all."""
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(app)


# One module per noun (stem_tui/cli/<name>.py), each with ``register(app: typer.Typer)``.
_COMMAND_MODULES: tuple[str, ...] = ("worker",)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
