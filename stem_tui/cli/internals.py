"""The one module of the CLI that reaches into Typer's internals
(``tests/cli/test_typer_internals.py`` fails, by name, when a Typer upgrade moves them).

Why: ``StemGroup.main`` (``main.py``) runs Click's main loop with
``standalone_mode=False`` so that every usage error becomes one ``error: ...`` line
(with the ``--help`` to see) instead of Click's boxed usage block, and ``stem`` alone
prints the help on stdout and exits 2. Typer 0.29 vendors Click as ``typer._click`` and
does not export the exceptions that mode raises, so they are imported from there, here
only.

What is used: ``ClickException`` (base of every usage error: ``exit_code``,
``format_message()``, ``ctx.command_path`` on usage errors), ``NoArgsIsHelpError``
(``ctx.get_help()``, ``exit_code``), and ``TyperGroup.main(args, prog_name,
complete_var, standalone_mode, **extra)`` raising them when ``standalone_mode`` is
false (``typer.Abort`` too).
"""

from __future__ import annotations

from typer._click.exceptions import ClickException, NoArgsIsHelpError

__all__ = ["ClickException", "NoArgsIsHelpError"]
