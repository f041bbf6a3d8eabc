"""The front ends are peers: the CLI starts without Textual (only `stem tui` / `stem demo`
import it when they run), and the TUI never imports the CLI nor Typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_cli_does_not_import_textual() -> None:
    code = ("import sys; from stem_tui.cli.main import _register; _register(); "
            "import stem_tui.cli.tui, stem_tui.cli.demo; "
            "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tui_does_not_import_the_cli() -> None:
    # Given every module of stem_tui outside stem_tui/cli (found on disk: walking the
    # package with pkgutil would import stem_tui.cli itself)
    root = Path(__file__).resolve().parents[2] / "stem_tui"
    names = sorted(".".join(("stem_tui", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
                   for p in root.rglob("*.py") if p.relative_to(root).parts[0] != "cli")
    # When a fresh interpreter imports them all
    code = (f"import importlib, sys; [importlib.import_module(n) for n in {names!r}]; "
            "print(sorted(m for m in sys.modules if m.startswith('stem_tui.cli') or m.split('.')[0] in ('typer', 'click')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # Then the app, its screens, widgets and dialogs load without any CLI module or Typer
    assert done.returncode == 0, done.stderr
    assert {"stem_tui.app", "stem_tui.source", "stem_tui.dialogs.plans", "stem_tui.widgets.literal"} <= set(names)
    assert done.stdout.strip() == "[]"


def test_stem_tui_refuses_without_a_terminal() -> None:
    done = subprocess.run([sys.executable, "-m", "stem_tui.cli.main", "tui", "--broker", "memory://x"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "needs a terminal" in done.stderr
    bad = subprocess.run([sys.executable, "-m", "stem_tui.cli.main", "tui", "--refresh", "soon"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid --refresh" in bad.stderr


def test_stem_tui_rejects_an_unusable_url_before_starting() -> None:
    done = subprocess.run([sys.executable, "-m", "stem_tui.cli.main", "tui", "--broker", "nope://x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "nope" in done.stderr and "Traceback" not in done.stderr
