"""The Typer internals ``stem_tui/cli/internals.py`` relies on, checked on the installed
Typer: the vendored Click exceptions exist where it imports them, with the attributes
``StemGroup.main`` reads, and Click's main loop raises them (instead of printing and
exiting) when ``standalone_mode`` is false. A Typer upgrade that moves any of them fails
here, by name, before ``stem`` starts printing tracebacks or Click's usage boxes."""

from __future__ import annotations

import inspect
from typing import Annotated

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from stem_tui.cli.internals import ClickException, NoArgsIsHelpError
from stem_tui.cli.main import StemGroup, _register, app


def small_group() -> TyperGroup:
    small = typer.Typer(cls=TyperGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None)

    @small.command()
    def hello(name: Annotated[str, typer.Argument()]) -> None:
        if name == "abort":
            raise typer.Abort()

    @small.command()
    def other() -> None:
        pass

    group = typer.main.get_command(small)
    assert isinstance(group, TyperGroup)
    return group


def test_the_exceptions_are_the_ones_typer_raises() -> None:
    assert issubclass(NoArgsIsHelpError, ClickException)
    assert issubclass(typer.BadParameter, ClickException)  # the public one is a ClickException
    assert inspect.getmodule(typer.BadParameter).__name__ == inspect.getmodule(ClickException).__name__  # type: ignore[union-attr]


def test_the_main_signature_stem_group_overrides() -> None:
    parameters = inspect.signature(TyperGroup.main).parameters
    assert list(parameters)[:5] == ["self", "args", "prog_name", "complete_var", "standalone_mode"]
    assert parameters["standalone_mode"].default is True
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert issubclass(StemGroup, TyperGroup) and "main" in vars(StemGroup)


def test_no_arguments_raise_no_args_is_help_with_the_help() -> None:
    with pytest.raises(NoArgsIsHelpError) as caught:
        small_group().main([], "small", None, False)
    assert caught.value.exit_code == 2
    assert "Usage: small" in caught.value.ctx.get_help()  # type: ignore[union-attr]


@pytest.mark.parametrize(("argv", "message"), [(["--bogus"], "No such option: --bogus"),
                                                (["hello"], "Missing argument"),
                                                (["nope"], "No such command")])
def test_usage_errors_raise_click_exceptions_with_a_message_and_context(argv: list[str], message: str) -> None:
    with pytest.raises(ClickException) as caught:
        small_group().main(argv, "small", None, False)
    assert caught.value.exit_code == 2 and message in caught.value.format_message()
    assert caught.value.ctx.command_path.startswith("small")  # type: ignore[attr-defined]


def test_abort_propagates() -> None:
    with pytest.raises(typer.Abort):
        small_group().main(["hello", "abort"], "small", None, False)


def test_stem_turns_them_into_one_line_and_the_help() -> None:
    _register()
    runner = CliRunner()
    bare = runner.invoke(app, [], prog_name="stem")
    assert bare.exit_code == 2 and bare.stdout.startswith("Usage: stem ")
    bad = runner.invoke(app, ["inspect", "--bogus"], prog_name="stem")
    assert bad.exit_code == 2 and bad.stderr == "error: No such option: --bogus (see 'stem inspect --help')\n"
