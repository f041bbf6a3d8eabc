"""The CLI starts without Textual: only `stem tui` / `stem demo` import it when they run."""

from __future__ import annotations

import subprocess
import sys


def test_cli_does_not_import_textual() -> None:
    code = ("import sys; from stem_tui.cli.main import _register; _register(); "
            "import stem_tui.cli.tui, stem_tui.cli.demo; "
            "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
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
