"""Hostile names through the CLI on every broker: as task names, queue names and task ids.

A name SPEC allows is accepted and every view shows it escaped (its JSON round-trips); a
name SPEC forbids is one error line with exit 2 and nothing enqueued; whichever it is,
the canary queue is untouched and a "fix:" command the operator pastes runs nothing.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.security.conftest import CANARY_QUEUE, Target, clean, matrix, one_line_error
from tests.security.corpus import NAMES, NEIGHBOURS, SHELL_IDS, TOUCHED_FILE, Name

WORK = "work"


@pytest.mark.parametrize(("target", "name"), matrix(NAMES), indirect=["target"])
def test_task_name(target: Target, name: Name) -> None:
    target.run(target.plant_canary)
    result = target.cli("enqueue", name.text, "-q", WORK)
    clean(result.stdout, result.stderr, where="enqueue")
    if not name.task_ok:
        assert result.exit_code == 2, (result.exit_code, result.stderr)
        one_line_error(result, "enqueue")
        stats = target.cli("inspect", "queues", "--json", "--sample", "0")
        assert stats.exit_code == 0, stats.stderr
        assert WORK not in [row["queue"] for row in json.loads(stats.stdout)["queues"]], "a rejected task was enqueued"
    else:
        assert result.exit_code == 0, (result.exit_code, result.stderr)
        task_id = result.stdout.strip()
        views = [["inspect", "queues"], ["inspect", "queues", "--json"], ["inspect", "task", task_id],
                 ["inspect", "task", task_id, "--json"], ["inspect", "audit"], ["inspect", "audit", "--json"]]
        if target.peeks:
            views += [["inspect", "queue", WORK], ["inspect", "queue", WORK, "--jsonl"]]
        for view in views:
            shown = target.cli(*view)
            assert shown.exit_code == 0, (view, shown.exit_code, shown.stderr)
            clean(shown.stdout, shown.stderr, where=" ".join(view))
        doc = json.loads(target.cli("inspect", "task", task_id, "--json").stdout)
        if doc.get("envelope") is not None:
            assert doc["envelope"]["name"] == name.text, "the JSON document does not round-trip the name"
    target.run(target.assert_canary)


@pytest.mark.parametrize(("target", "name"), matrix(NAMES), indirect=["target"])
def test_queue_name(target: Target, name: Name) -> None:
    target.run(target.plant_canary)
    commands = [["enqueue", "t", "-q", name.text], ["inspect", "queue", name.text],
                ["purge", name.text, "--yes"], ["purge", name.text, "--dead", "--yes"],
                ["requeue", name.text, "--expired-leases", "--yes"], ["dlq", "list", name.text],
                ["dlq", "replay", name.text, "--yes"], ["broadcast", "pause", "-q", name.text, "--timeout", "200ms"]]
    for command in commands:
        result = target.cli(*command)
        clean(result.stdout, result.stderr, where=" ".join(command[:1]))
        if not name.queue_ok:
            assert result.exit_code == 2, (command[:2], result.exit_code, result.stderr)
            one_line_error(result, command[0])
        else:
            # A legal name: it works (0), or names a queue with nothing in it (1); never 2 or 3.
            assert result.exit_code in (0, 1), (command[:2], result.exit_code, result.stderr)
    target.run(target.assert_canary)


@pytest.mark.parametrize(("target", "neighbour"), matrix(NEIGHBOURS, key=str, light=lambda n: n in ("canary_", "canary.dead")),
                         indirect=["target"])
def test_destroying_a_lookalike_queue_leaves_the_canary(target: Target, neighbour: str) -> None:
    """Queue names that look like the canary's keys, tables, SQS or AMQP names, or LIKE
    patterns matching it: every destructive command on them leaves the canary as it was."""
    target.run(target.plant_canary)
    enqueued = target.cli("enqueue", "lookalike", "-q", neighbour)
    assert enqueued.exit_code == 0, enqueued.stderr
    for command in (["purge", neighbour, "--yes"], ["purge", neighbour, "--dead", "--yes"],
                    ["dlq", "purge", neighbour, "--yes"], ["requeue", neighbour, "--dead", "--yes"],
                    ["requeue", neighbour, "--expired-leases", "--yes"]):
        result = target.cli(*command)
        clean(result.stdout, result.stderr, where=" ".join(command))
        assert result.exit_code in (0, 1), (command, result.exit_code, result.stderr)
    target.run(target.assert_canary)
    listed = json.loads(target.cli("inspect", "queues", "--json", "--sample", "0").stdout)["queues"]
    canary = [row for row in listed if row["queue"] == CANARY_QUEUE]
    assert canary and canary[0]["pending"] == 1, listed


def _pasted(command: str, cwd: Path) -> list[str]:
    """What bash passes to ``stem`` when the operator pastes ``command`` (stem replaced by
    printf, so nothing but the quoting is exercised); any side effect lands in ``cwd``."""
    words = command.strip()
    assert words.startswith("stem "), command
    script = "printf '%s\\0' " + words[len("stem "):]
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=cwd, capture_output=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=30)
    return done.stdout.decode(errors="replace").split("\0")[:-1]


def _fix_commands(text: str) -> list[str]:
    """Every ``stem ...`` command line shown (the part from ``stem `` to a ``  #`` comment)."""
    out = []
    for line in text.splitlines():
        at = line.find("stem ")
        if at < 0 or "--id" not in line:
            continue
        command = line[at:]
        if "  #" in command:
            command = command[:command.index("  #")]
        out.append(command.rstrip())
    return out


@pytest.mark.parametrize(("target", "name"), matrix(SHELL_IDS, light=lambda n: n.id == "shell-semicolon"),
                         indirect=["target"])
def test_fix_commands_quote_hostile_ids(target: Target, name: Name, tmp_path: Path) -> None:
    """issue 15: ``stem enqueue ok --id 'x; touch PWNED #' --delay 1h`` then ``stem inspect
    task`` must print a command that, pasted into a shell, passes the id as one word."""
    sandbox = tmp_path / "paste"
    sandbox.mkdir()
    enqueued = target.cli("enqueue", "ok", "-q", WORK, "--id", name.text, "--delay", "1h")
    assert enqueued.exit_code == 0, enqueued.stderr
    shown = target.cli("inspect", "task", name.text)
    assert shown.exit_code == 0, shown.stderr
    clean(shown.stdout, shown.stderr, where="inspect task")
    commands = _fix_commands(shown.stdout)
    assert commands, f"inspect task shows no fix command:\n{shown.stdout}"
    for command in commands:
        argv = _pasted(command, sandbox)
        assert not (sandbox / TOUCHED_FILE).exists(), f"pasting {command!r} ran a command"
        assert name.text in argv, f"pasting {command!r} does not pass the id as one word: {argv!r}"
        assert shlex.split(command)[0] == "stem"
