"""Every command Stem suggests ("fix:", "replay:", the TUI's panels) pastes safely: each
value taken from data is one shell word (issue 15: a task id ``x; touch /tmp/PWNED #``
made the suggested ``stem requeue`` line run ``touch``)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from stem_core.ops import Ops, stem_command
from tests.cli.conftest import Cli
from tests.cli.helpers import claim


def hostile_id(tmp_path: Path) -> str:
    # Relative names: the pasted line runs in tmp_path.
    return "x; touch PWNED #$(touch PWNED2)`touch PWNED3`'\""


def paste(line: str, tmp_path: Path) -> list[str]:
    """Run ``line`` in a real shell, with a fake ``stem`` that records its argv: the words
    the operator's shell would have passed; nothing else may have run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "stem"
    record = tmp_path / "argv.json"
    fake.write_text(f"#!/bin/sh\nexec python3 -c 'import json,sys; json.dump(sys.argv[1:], open(\"{record}\", \"w\"))' \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    subprocess.run(["sh", "-c", line], cwd=tmp_path, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=True)
    assert not any((tmp_path / name).exists() for name in ("PWNED", "PWNED2", "PWNED3")), line
    return json.loads(record.read_text())


def suggested(output: str, marker: str) -> list[str]:
    return [line.split(marker, 1)[1].strip() for line in output.splitlines() if marker in line]


def test_inspect_task_fix_lines_quote_the_id(cli: Cli, tmp_path: Path) -> None:
    task = hostile_id(tmp_path)
    result = cli("enqueue", "ok", "--id", task, "--delay", "1h")
    assert result.exit_code == 0, result.stderr
    shown = cli("inspect", "task", task)
    fixes = suggested(shown.stdout, "fix:")
    assert fixes, shown.stdout
    pasted = [paste(fix, tmp_path) for fix in fixes]
    assert ["requeue", "default", "--id", task] in pasted
    assert ["worker", "--app", "MODULE:APP", "--queues", "default"] in pasted
    fixes = [b["fix"] for b in json.loads(cli("inspect", "task", task, "--json").stdout)["blockers"] if b.get("fix")]
    assert [paste(fix, tmp_path) for fix in fixes] == pasted


def test_dead_letter_fix_and_dlq_show_replay_line_quote_the_id(cli: Cli, tmp_path: Path) -> None:
    task = hostile_id(tmp_path)

    async def go(ops: Ops) -> None:
        await ops.enqueue("ok", {}, queue="q", task_id=task)
        (held,) = await claim(ops.broker, ["q"], "w", 1)
        await ops.broker.dead_letter(held, reason="boom")

    cli.seed(go)
    (replay,) = suggested(cli("dlq", "show", "q", task).stdout, "replay:")
    assert paste(replay, tmp_path) == ["dlq", "replay", "q", "--id", task]
    (fix,) = suggested(cli("inspect", "task", task).stdout, "fix:")
    assert paste(fix, tmp_path) == ["dlq", "replay", "q", "--id", task]


@pytest.mark.parametrize("value", ["plain", "a b", "x; rm -rf / #", "$(id)", "`id`", "it's", "\n", ""])
def test_stem_command_makes_every_value_one_word(value: str) -> None:
    assert shlex.split(stem_command("requeue", "q", "--id", value)) == ["stem", "requeue", "q", "--id", value]
