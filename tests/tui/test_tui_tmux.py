"""The real ``stem tui`` in a real terminal: tmux runs it against a SQLite file, the test
types keys with ``send-keys`` and reads the screen with ``capture-pane``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.specs import require_tool

pytestmark = pytest.mark.slow

COLUMNS, ROWS = 120, 40
# Deadlines bound a hang; nothing asserts how fast the screen changed.
DEADLINE_S = 60.0
POLL_S = 0.1


class Terminal:
    def __init__(self, tmux: str, socket: str) -> None:
        self.tmux_path = tmux
        self.socket = socket

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.tmux_path, "-L", self.socket, *args], capture_output=True, text=True, check=check)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tui", check=False).stdout

    def wait_for(self, *texts: str) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            shown = self.screen()
            if all(t in shown for t in texts):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {texts!r}; the screen shows:\n{shown}")
            time.sleep(POLL_S)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "tui", *keys)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "tui", check=False).returncode == 0


def stem(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "stem_tui.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    # Skipped without tmux (apt-get install tmux); CI (STEM_REQUIRE_SERVICES=1) fails instead.
    term = Terminal(require_tool("tmux"), f"stem-test-{uuid.uuid4().hex[:8]}")
    yield term
    term.tmux("kill-server", check=False)  # this test's own tmux server only


def test_stem_tui_in_tmux_on_sqlite(tmp_path: Path, terminal: Terminal) -> None:
    # Given a SQLite broker with two queues
    env = {**os.environ, "STEM_BROKER_URL": "sqlite://" + str(tmp_path / "stem.db"), "STEM_NAMESPACE": "tmuxtest",
           "STEM_RESULT_BACKEND_URL": "", "STEM_ACTOR": "tmux@test", "TERM": "xterm-256color"}
    env.pop("STEM_RESULT_BACKEND_URL")
    for n in range(3):
        stem(env, "enqueue", "email.send", "--queue", "emails", "--args", f'{{"n": {n}}}')
    stem(env, "enqueue", "export.csv", "--queue", "exports")
    command = shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", *(f"{k}={env[k]}" for k in ("STEM_BROKER_URL", "STEM_NAMESPACE", "STEM_ACTOR", "TERM")),
                          sys.executable, "-m", "stem_tui.cli.main", "tui", "--refresh", "1s"])
    terminal.tmux("new-session", "-d", "-s", "tui", "-x", str(COLUMNS), "-y", str(ROWS), command)
    # When it starts, Then the Queues view lists both queues with their verdicts
    shown = terminal.wait_for("Queues", "emails", "exports", "no-workers")
    assert "tmuxtest" in shown
    # When the operator switches views with number keys
    terminal.keys("3")
    terminal.wait_for("Workers", "no worker heartbeats")
    terminal.keys("5")
    terminal.wait_for("Events", "connected: 2 queue(s)")
    # and purges exports: select it, X, confirm with Ctrl+Y
    terminal.keys("1")
    terminal.wait_for("Queues", "emails")
    terminal.keys("Down", "X")
    terminal.wait_for("Purge exports?", "stem purge exports", "Purge 1")
    terminal.keys("C-y")
    terminal.wait_for("Purge exports: done, 1 affected")
    # Then the queue is empty for the CLI too, and the action is in the audit log
    queues = {q["queue"]: q for q in json.loads(stem(env, "inspect", "queues", "--json"))["queues"]}
    assert "exports" not in queues and queues["emails"]["pending"] == 3  # an emptied queue is forgotten
    assert "tmux@test" in stem(env, "inspect", "audit", "--json")
    # When q is pressed, the TUI exits and the terminal is handed back
    terminal.keys("q")
    deadline = time.monotonic() + DEADLINE_S
    while terminal.alive() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not terminal.alive()
