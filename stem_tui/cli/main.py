"""The ``stem`` command: a Typer app with one module per noun."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, Sequence

import typer
from typer.core import TyperGroup

from .output import EXIT_CODES_HELP, EXIT_FAILED, error, plain

HELP = f"""Stem: background jobs and the tools to operate them.

Every command takes --broker/--backend/--namespace (or STEM_BROKER_URL,
STEM_RESULT_BACKEND_URL, STEM_NAMESPACE); reads take --json or --jsonl.

{EXIT_CODES_HELP}
"""


def normalize_argv(args: Sequence[str]) -> list[str]:
    """``--watch 5s`` / ``--watch=5s`` -> ``--watch --interval 5s`` (SPEC: ``--watch [interval]``;
    Typer options cannot take an optional value)."""
    from .parsing import is_duration

    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        if token == "--":
            out.extend(items[i:])
            break
        if token.startswith("--watch="):
            out += ["--watch", "--interval", token.split("=", 1)[1]]
        elif token == "--watch" and i + 1 < len(items) and is_duration(items[i + 1]):
            out += ["--watch", "--interval", items[i + 1]]
            i += 1
        else:
            out.append(token)
        i += 1
    return out


class StemGroup(TyperGroup):
    """The root group: rewrites ``--watch INTERVAL`` and turns usage errors into one line."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = normalize_argv(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        from .internals import ClickException, NoArgsIsHelpError

        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except NoArgsIsHelpError as exc:
            # `stem` or `stem inspect` alone: the help, on stdout like --help, then exit 2.
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                plain(ctx.get_help())
            sys.exit(exc.exit_code)
        except ClickException as exc:
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or "stem"
            error(f"{exc.format_message()} (see '{where} --help')")
            sys.exit(exc.exit_code)
        except typer.Abort:
            error("aborted")
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="stem",
    cls=StemGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(requested: bool) -> None:
    if requested:
        from .entry import version_line

        plain(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    # A callback keeps `stem <command>` a group even while only one command is registered
    # (Typer otherwise runs a lone command as the root and rejects its name).
    pass


# One module per noun (stem_tui/cli/<name>.py), each with ``register(app: typer.Typer)``.
_COMMAND_MODULES: tuple[str, ...] = (
    "enqueue", "inspect", "requeue", "broadcast", "purge", "dlq", "health", "config", "worker", "metrics", "schedule", "tui", "demo",
)
_registered = False


def _register() -> None:
    """Each noun module exposes ``register(app)``; listed here so ``stem --help`` shows them all."""
    global _registered
    if _registered:
        return
    _registered = True
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(app)


def main() -> None:
    """Run the CLI (the console script is ``stem_tui.cli.entry.main``, a shim in front of
    this that needs no third-party module). Operator commands keep library logs to errors (``stem worker``
    sets up its own logging)."""
    import os

    from .output import ENV_LOGLEVEL, quiet_library_logs

    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command not in ("worker", "beat"):
        quiet_library_logs(os.environ.get(ENV_LOGLEVEL))
    _register()
    app()


if __name__ == "__main__":
    main()
