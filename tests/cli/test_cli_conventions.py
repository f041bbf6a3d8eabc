"""Command-line conventions, on the real executable (``python -m stem_tui``) in a real
pseudo-terminal: ``NO_COLOR`` (no-color.org: any non-empty value) leaves no escape
sequence in the output even on a terminal or with ``FORCE_COLOR``; without it a terminal
gets colour; ``FORCE_COLOR`` styles piped output; ``stem --version``."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

import stem_core

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
ESC = "\x1b["


def environment(tmp_path: Path, namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_") and k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"PYTHONPATH": str(ROOT), "STEM_BROKER_URL": f"sqlite:///{tmp_path / 'stem.db'}",
                "STEM_NAMESPACE": namespace, "STEM_ACTOR": "tester@conventions", "TERM": "xterm-256color",
                "COLUMNS": "160"})
    env.update(extra)
    return env


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``stem argv`` with stdin, stdout and stderr on a fresh pseudo-terminal; return its
    exit code and everything it wrote there."""
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen([sys.executable, "-m", "stem_tui", *argv], stdin=terminal, stdout=terminal,
                                 stderr=terminal, env=env, cwd=ROOT, close_fds=True)
    finally:
        os.close(terminal)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
    return child.wait(timeout=TIMEOUT_S), b"".join(chunks).decode(errors="replace")


def piped(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stem_tui", *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A SQLite store with one pending message (``inspect queues`` shows a styled verdict),
    shared by the module's tests: they only read it."""
    where, namespace = tmp_path_factory.mktemp("conventions"), "tconventions"
    done = piped(["enqueue", "tasks.add", "--args", '{"x": 1}', "-q", "colours"], environment(where, namespace))
    assert done.returncode == 0, done.stderr
    return where, namespace


@pytest.fixture
def seeded(store: tuple[Path, str]) -> Path:
    return store[0]


@pytest.fixture
def namespace(store: tuple[Path, str]) -> str:
    return store[1]


COMMANDS = [["inspect", "queues"], ["health"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_terminal_gets_colour(seeded: Path, namespace: str, argv: list[str]) -> None:
    code, out = on_terminal(argv, environment(seeded, namespace))
    assert code == 0, out
    assert ESC in out, repr(out)


@pytest.mark.parametrize("argv", [*COMMANDS, ["--help"], ["inspect", "--bogus"], ["inspect", "queue", "nope"]],
                         ids=" ".join)
def test_no_color_leaves_no_escape_on_a_terminal(seeded: Path, namespace: str, argv: list[str]) -> None:
    code, out = on_terminal(argv, environment(seeded, namespace, NO_COLOR="1"))
    assert out.strip(), code
    assert "\x1b" not in out, repr(out)


@pytest.mark.parametrize("no_color", ["true", "0"])  # any non-empty value, even "0"
def test_any_non_empty_no_color_counts(seeded: Path, namespace: str, no_color: str) -> None:
    code, out = on_terminal(["inspect", "queues"], environment(seeded, namespace, NO_COLOR=no_color))
    assert code == 0 and "colours" in out and "\x1b" not in out, repr(out)


def test_no_color_wins_over_force_color(seeded: Path, namespace: str) -> None:
    code, out = on_terminal(["inspect", "queues"], environment(seeded, namespace, NO_COLOR="1", FORCE_COLOR="1"))
    assert code == 0 and "colours" in out and "\x1b" not in out, repr(out)
    done = piped(["inspect", "queues"], environment(seeded, namespace, NO_COLOR="1", FORCE_COLOR="1"))
    assert done.returncode == 0 and "colours" in done.stdout and "\x1b" not in done.stdout


def test_an_empty_no_color_is_unset(seeded: Path, namespace: str) -> None:
    code, out = on_terminal(["inspect", "queues"], environment(seeded, namespace, NO_COLOR=""))
    assert code == 0 and ESC in out, repr(out)


def test_piped_output_is_plain_unless_force_color(seeded: Path, namespace: str) -> None:
    done = piped(["inspect", "queues"], environment(seeded, namespace))
    assert done.returncode == 0 and "colours" in done.stdout and "\x1b" not in done.stdout
    done = piped(["inspect", "queues"], environment(seeded, namespace, FORCE_COLOR="1"))
    assert done.returncode == 0 and "colours" in done.stdout and ESC in done.stdout


def test_version_and_python_m(tmp_path: Path, namespace: str) -> None:
    env = environment(tmp_path, namespace)
    done = piped(["--version"], env)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"stem {stem_core.__version__}\n", "")
    done = piped(["--help"], env)
    assert done.returncode == 0 and done.stdout.startswith("Usage: python -m stem_tui ") and "inspect" in done.stdout
    done = piped(["--bogus"], env)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("argv", [["tui"], ["demo", "--duration", "1s"]], ids=" ".join)
def test_the_tui_commands_name_their_extra_without_textual(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                           tmp_path: Path) -> None:
    # Given an install with the cli extra but not the tui one (Textual not found)
    import importlib.util

    from typer.testing import CliRunner

    from stem_tui.cli.main import _register, app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] == "textual" else real(name, *a, **k))
    _register()
    env = {"STEM_BROKER_URL": f"sqlite:///{tmp_path / 'stem.db'}", "STEM_NAMESPACE": "textra"}
    done = CliRunner().invoke(app, argv, env=env, prog_name="stem")
    # Then one line names the extra, exit 2, and nothing was started
    assert done.exit_code == 2, done.output
    assert done.stderr.count("\n") == 1 and "pip install 'stem-queue[tui]'" in done.stderr, done.stderr
    assert done.stdout == ""
