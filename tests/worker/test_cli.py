"""``stem worker`` argument handling: bad apps and options are one line on stderr, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.worker.helpers import ROOT


def _stem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stem_tui.cli.main", "worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("app_path", "message"),
    [
        ("no_such_module_xyz:app", "cannot import app module 'no_such_module_xyz'"),
        ("tests.worker.apps.tasks:missing", "has no attribute 'missing'"),
        ("tests.worker.apps.tasks:register", "is a function, not a stem_core.Stem app"),
        ("tests.worker.apps.broken:app", "importing app module 'tests.worker.apps.broken' failed: RuntimeError"),
        (":app", "--app must look like pkg.module:app"),
    ],
)
def test_bad_app_paths_exit_2_with_one_line(app_path: str, message: str) -> None:
    result = _stem("--app", app_path, "--broker", "memory://cli")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-q", "bad queue"], "invalid queue name"),
        (["--heartbeat-interval", "soon"], "invalid --heartbeat-interval"),
        (["--loglevel", "chatty"], "--loglevel must be one of"),
        (["--loop", "trio"], "--loop must be one of auto, asyncio, uvloop"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    result = _stem("--app", "tests.worker.apps.tasks:app", "--broker", "memory://cli", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_broker_url_exits_2() -> None:
    result = _stem("--app", "tests.worker.apps.tasks:app", "--broker", "kafka://localhost", "--burst")
    assert result.returncode == 2
    assert "unknown URL scheme" in result.stderr and "Traceback" not in result.stderr


def test_burst_worker_on_an_empty_memory_broker_exits_0() -> None:
    result = _stem("--app", "tests.worker.apps.tasks:app", "--broker", "memory://cli-empty", "--burst", "--loglevel", "info")
    assert result.returncode == 0, result.stderr
    assert "queues drained" in result.stderr


@pytest.mark.parametrize(("loop", "shown"), [("asyncio", "loop=asyncio"), ("uvloop", "loop=uvloop"), ("auto", "loop=uvloop")])
def test_loop_option_picks_the_event_loop(tmp_path, loop: str, shown: str) -> None:
    # uvloop is in the [test] extra (via [fast]), so auto picks it here
    url = "sqlite://" + str(tmp_path / "loop.db")
    result = _stem("--app", "tests.worker.apps.tasks:app", "--broker", url, "--burst", "--loop", loop, "--loglevel", "info")
    assert result.returncode == 0, result.stderr
    assert shown in result.stderr and "queues drained" in result.stderr


def test_worker_logs_escape_control_characters_from_ids_and_names(tmp_path: Path) -> None:
    # Given a worker id carrying an escape sequence and a CRLF (issue 15: they reached
    # stderr/journald raw, able to recolour the terminal and forge log lines)
    evil = "w\x1b[31mRED\r\nFORGED line"
    result = subprocess.run(
        [sys.executable, "-m", "stem_tui.cli.main", "worker", "--app", "tests.worker.apps.tasks:app",
         "--broker", f"sqlite://{tmp_path / 'stem.db'}", "--namespace", "logs", "--worker-id", evil,
         "--burst", "--loglevel", "info", "--heartbeat-interval", "1s"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # Then every record is one line of visible characters, the id shown escaped
    assert "w\\x1b[31mRED\\x0d\\x0aFORGED line" in result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert not any(line.startswith("FORGED") for line in result.stderr.splitlines())


def test_the_safe_formatter_neutralises_messages_arguments_and_tracebacks() -> None:
    import logging

    from stem_core.safetext import SafeFormatter

    try:
        raise ValueError("bad \x1b[2J name\u202e")
    except ValueError:
        record = logging.LogRecord("stem.worker", logging.ERROR, __file__, 1, "task %s (%s) failed",
                                   ("id\r\n2024-01-01 INFO forged", "t\x1b]0;title\x07"), sys.exc_info())
    text = SafeFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    first, *trace = text.split("\n")
    assert first == "ERROR stem.worker: task id\\x0d\\x0a2024-01-01 INFO forged (t\\x1b]0;title\\x07) failed"
    assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "ValueError: bad \\x1b[2J name\\u202e"
    assert not any(ch in text for ch in "\x1b\r\x07\u202e")
