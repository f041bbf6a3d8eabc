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

from tests.security.conftest import CANARY_QUEUE, Cases, Target, clean, one_line_error, spec_params
from tests.security.corpus import NAMES, NEIGHBOURS, SHELL_IDS, TOUCHED_FILE, Name

WORK = "work"



def _names(target: Target, names: list[Name]) -> list[Name]:
    return [n for n in names if n.light or not target.light]


def _queues(target: Target) -> list[str]:
    result = target.cli("inspect", "queues", "--json", "--sample", "0")
    assert result.exit_code == 0, result.stderr
    return [row["queue"] for row in json.loads(result.stdout)["queues"]]


@pytest.mark.parametrize("target", spec_params(), indirect=True)
def test_task_names(target: Target) -> None:
    """Each name as ``stem enqueue NAME``: legal ones are accepted and shown escaped in
    every view (their JSON round-trips), illegal ones are exit 2 and enqueue nothing."""
    target.run(target.plant_canary)
    cases = Cases()
    accepted: dict[str, Name] = {}
    for name in _names(target, NAMES):
        with cases.case(name.id):
            result = target.cli("enqueue", name.text, "-q", WORK, "--delay", "1h")
            clean(result.stdout, result.stderr, where="enqueue")
            if name.task_ok:
                assert result.exit_code == 0, f"legal name refused: exit {result.exit_code}: {result.stderr.strip()}"
                accepted[result.stdout.strip()] = name
            else:
                assert result.exit_code == 2, f"illegal name: exit {result.exit_code}, not 2: {result.stderr.strip()[:200]}"
                one_line_error(result, "enqueue")
    with cases.case("nothing-illegal-enqueued"):
        assert target.live(WORK) == len(accepted)
    views = [["inspect", "queues", "--sample", "0"], ["inspect", "queues", "--json", "--sample", "0"],
             ["inspect", "audit"], ["inspect", "audit", "--json"]]
    if target.peeks:
        views += [["inspect", "queue", WORK, "--state", "delayed"], ["inspect", "queue", WORK, "--state", "delayed", "--jsonl"]]
    for view in views:
        with cases.case(" ".join(view)):
            shown = target.cli(*view)
            assert shown.exit_code == 0, (shown.exit_code, shown.stderr)
            clean(shown.stdout, shown.stderr, where=" ".join(view))
    for task_id, name in accepted.items():
        with cases.case(f"inspect-task-{name.id}"):
            for fmt in ([], ["--json"]):
                shown = target.cli("inspect", "task", task_id, *fmt)
                assert shown.exit_code == 0, (shown.exit_code, shown.stderr)
                clean(shown.stdout, shown.stderr, where="inspect task")
            doc = json.loads(shown.stdout)
            if doc.get("envelope") is not None:
                assert doc["envelope"]["name"] == name.text, "the JSON document does not round-trip the name"
    with cases.case("canary"):
        target.run(target.assert_canary)
    cases.check()


QUEUE_COMMANDS = [["enqueue", "t", "-q", "{q}"], ["inspect", "queue", "{q}"], ["purge", "{q}", "--yes"],
                  ["purge", "{q}", "--dead", "--yes"], ["requeue", "{q}", "--expired-leases", "--yes"],
                  ["dlq", "list", "{q}"], ["dlq", "replay", "{q}", "--yes"],
                  ["broadcast", "pause", "-q", "{q}", "--timeout", "200ms", "--yes"]]


@pytest.mark.parametrize("target", spec_params(), indirect=True)
def test_queue_names(target: Target) -> None:
    """Each name as the queue of every command that takes one: illegal ones are exit 2
    (one line), legal ones work or find nothing (0 or 1); the canary is untouched."""
    target.run(target.plant_canary)
    cases = Cases()
    # Names are checked before a broker is reached: the whole matrix on the in-memory
    # broker, and on the servers every legal name and a few illegal ones.
    names = NAMES if target.spec.id == "memory" else [n for n in NAMES if n.queue_ok or n.id in ("over-201", "lua-key")]
    templates = QUEUE_COMMANDS if not target.light else QUEUE_COMMANDS[:3]
    for name in names:
        with cases.case(name.id):
            for template in templates:
                command = [name.text if word == "{q}" else word for word in template]
                result = target.cli(*command)
                clean(result.stdout, result.stderr, where=command[0])
                if not name.queue_ok:
                    assert result.exit_code == 2, f"{command[0]} {command[1]}: exit {result.exit_code}, not 2"
                    one_line_error(result, command[0])
                else:
                    assert result.exit_code in (0, 1), f"{command[:2]}: exit {result.exit_code}: {result.stderr[:200]}"
    with cases.case("canary"):
        target.run(target.assert_canary)
    cases.check()


@pytest.mark.parametrize("target", spec_params(), indirect=True)
def test_destroying_lookalike_queues_leaves_the_canary(target: Target) -> None:
    """Queue names that look like the canary's keys, tables, SQS or AMQP names, or LIKE
    patterns matching it: every destructive command on them leaves the canary as it was."""
    target.run(target.plant_canary)
    neighbours = NEIGHBOURS if not target.light else ["canary_", "canary.dead", "canary-dead"]
    cases = Cases()
    for neighbour in neighbours:
        with cases.case(neighbour):
            enqueued = target.cli("enqueue", "lookalike", "-q", neighbour)
            assert enqueued.exit_code == 0, enqueued.stderr
    for neighbour in neighbours:
        with cases.case(neighbour):
            for command in (["purge", neighbour, "--yes"], ["purge", neighbour, "--dead", "--yes"],
                            ["dlq", "purge", neighbour, "--yes"], ["requeue", neighbour, "--dead", "--yes"],
                            ["requeue", neighbour, "--expired-leases", "--yes"]):
                result = target.cli(*command)
                clean(result.stdout, result.stderr, where=" ".join(command))
                assert result.exit_code in (0, 1), (command, result.exit_code, result.stderr)
    with cases.case("canary"):
        target.run(target.assert_canary)
        if target.peeks:  # RabbitMQ and SQS list no queues without a heartbeat naming them
            assert CANARY_QUEUE in _queues(target)
    cases.check()


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


@pytest.mark.parametrize("target", spec_params(), indirect=True)
def test_fix_commands_quote_hostile_ids(target: Target, tmp_path: Path) -> None:
    """issue 15: ``stem enqueue ok --id 'x; touch PWNED #' --delay 1h`` then ``stem inspect
    task`` must print commands that, pasted into a shell, pass the id as one word and run
    nothing else."""
    cases = Cases()
    for name in _names(target, SHELL_IDS):
        with cases.case(name.id):
            sandbox = tmp_path / name.id
            sandbox.mkdir()
            enqueued = target.cli("enqueue", "ok", "-q", WORK, "--id", name.text, "--delay", "1h")
            assert enqueued.exit_code == 0, enqueued.stderr
            shown = target.cli("inspect", "task", name.text)
            clean(shown.stdout, shown.stderr, where="inspect task")
            assert shown.exit_code == 0, shown.stderr
            commands = _fix_commands(shown.stdout)
            if not target.peeks and not commands:
                continue  # RabbitMQ, SQS: a delayed message cannot be located, so no fix may be offered
            assert commands, f"inspect task shows no fix command:\n{shown.stdout}"
            for command in commands:
                argv = _pasted(command, sandbox)
                assert not (sandbox / TOUCHED_FILE).exists(), f"pasting {command!r} ran a command"
                assert name.text in argv, f"pasting {command!r} does not pass the id as one word: {argv!r}"
    cases.check()
