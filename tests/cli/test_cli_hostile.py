"""Hostile data and input: terminal escapes, Rich markup, bidi overrides and NULs in task
names, args, worker ids and reasons are shown neutralised; credentials never appear."""

from __future__ import annotations

import json
import re
import pytest

from stem_core.control.pause import pause_queues
from stem_core.ops import Ops
from stem_tui.cli.output import neutralise
from tests.cli.conftest import Cli
from tests.cli.helpers import claim, heartbeat, inflight_entry

# No NUL in the name: task names may not hold one (limits.check_task_name); the args do.
EVIL_NAME = "evil\x1b[31mRED\x1b]0;pwned\x07[bold red]markup[/bold red]\u202egnp.exe\x01\x9b2J"
EVIL_ARGS = {"k\x1b[2J": "v\x1b[1;1H\u2066", "nul": "a\x00b"}
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def assert_clean(text: str) -> None:
    found = RAW.findall(text)
    assert not found, f"raw control or bidi characters reached the output: {found!r}"


def evil_scene(cli: Cli) -> str:
    async def go(ops: Ops) -> str:
        task = (await ops.enqueue(EVIL_NAME, EVIL_ARGS, queue="q")).detail.ids[0]
        await ops.enqueue(EVIL_NAME, EVIL_ARGS, queue="q")
        (held,) = await claim(ops.broker, ["q"], "w\x1b[5mblink", 1)
        await ops.backend.set_heartbeat(heartbeat("w\x1b[5mblink", ["q"], inflight=[inflight_entry(held)]))
        await ops.enqueue(EVIL_NAME, EVIL_ARGS, queue="dead")
        (gone,) = await claim(ops.broker, ["dead"], "w", 1)
        await ops.broker.dead_letter(gone, reason="reason\x1b[31m[red]x[/red]\u202e")
        await pause_queues(ops.backend, ["q"], reason="\x1b]8;;http://evil\x07click\x1b]8;;\x07", by="[b]mallory[/b]")
        return task

    return cli.seed(go)


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--jsonl"]])
def test_every_view_neutralises_hostile_data(cli: Cli, fmt: list[str]) -> None:
    task = evil_scene(cli)
    commands = [
        ["inspect", "queues", "--sample", "0"],
        ["inspect", "queue", "q"],
        ["inspect", "queue", "q", "--state", "inflight"],
        ["inspect", "queue", "dead", "--state", "dead"],
        ["inspect", "task", task],
        ["inspect", "workers"],
        ["inspect", "leases"],
        ["inspect", "audit"],
        ["dlq", "list", "dead"],
        ["purge", "q", "--dry-run"],
        ["requeue", "q", "--expired-leases", "--dry-run"],
    ]
    for command in commands:
        result = cli(*command, *fmt)
        assert result.exit_code == 0, (command, result.stderr)
        assert_clean(result.stdout)
        assert_clean(result.stderr)


def test_table_output_shows_markup_literally_and_escapes_visibly(cli: Cli) -> None:
    task = evil_scene(cli)
    assert "evil\\x1b[31mRED" in cli("inspect", "queue", "q").stdout  # cut to the column, escaped
    out = cli("inspect", "task", task).stdout
    assert "[bold red]markup[/bold red]" in out  # not interpreted as Rich markup
    assert "\\x1b[31mRED" in out and "\\u202egnp.exe" in out and "\\x01" in out
    queues = cli("inspect", "queues", "--sample", "0").stdout
    assert "[b]mallory[/b]" in queues and "\\x1b]8;;http://evil" in queues


def test_json_is_ascii_escaped_and_round_trips(cli: Cli) -> None:
    task = evil_scene(cli)
    doc = json.loads(cli("inspect", "task", task, "--json").stdout)
    assert doc["envelope"]["name"] == EVIL_NAME and doc["envelope"]["args"] == EVIL_ARGS


def test_hostile_input_in_flags_is_neutralised_in_errors(cli: Cli) -> None:
    result = cli("inspect", "queue", "a\x1b[2Jb")
    assert result.exit_code == 2 and "invalid queue name" in result.stderr
    assert_clean(result.stderr)
    bad_json = cli("enqueue", "t", "--args", "\x1b[31m{")
    assert bad_json.exit_code == 2
    assert_clean(bad_json.stderr)


def test_neutralise_keeps_ordinary_text() -> None:
    assert neutralise("plain ascii") == "plain ascii"
    assert neutralise("café ☕ 日本") == "café ☕ 日本"
    assert neutralise("a\tb\nc") == "a\\x09b\\x0ac"
    assert neutralise("\u200b\u2028\U000e0001") == "\\u200b\\u2028\\U000e0001"


def test_credentials_never_appear(cli: Cli) -> None:
    url = "redis://admin:TopSecret99@127.0.0.1:1/0"
    for command in (["inspect", "queues"], ["health"], ["config"], ["enqueue", "t"], ["inspect", "task", "x", "--json"]):
        result = cli(*command, "--broker", url, "--backend", url)
        assert "TopSecret99" not in result.stdout + result.stderr, command
    unreachable = cli("inspect", "queues", "--broker", url, "--backend", url)
    assert unreachable.exit_code == 3 and unreachable.stderr.count("\n") == 1 and "***" in unreachable.stderr


def test_help_documents_exit_codes_and_completion(cli: Cli) -> None:
    out = cli("--help").stdout
    assert "Exit codes: 0 ok; 1" in out and "3 cannot reach the broker" in out and "--install-completion" in out
    assert "STEM_STALE_AFTER" in cli("inspect", "leases", "--help").stdout


def test_usage_errors_are_one_line(cli: Cli) -> None:
    for command in (["inspect", "queue"], ["inspect", "nope"], ["requeue", "q", "--limit", "x"], ["enqueue", "--bogus"]):
        result = cli(*command)
        assert result.exit_code == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, command



def test_a_heartbeat_with_invalid_queue_names_is_ignored_by_every_overview(cli: Cli) -> None:
    # Given a heartbeat naming queues no broker accepts (issue 15: `stem inspect queues` exited 2)
    async def go(ops: Ops) -> None:
        await ops.enqueue("t", {}, queue="q")
        await ops.backend.set_heartbeat(heartbeat("w-odd", ["bad queue", "q", "a/b"], paused=["x y"]))

    cli.seed(go)
    for command in (["inspect", "queues"], ["inspect", "workers"], ["inspect", "leases"], ["health"]):
        result = cli(*command, "--json")
        assert result.exit_code == 0, (command, result.stderr)
    assert [q["queue"] for q in json.loads(cli("inspect", "queues", "--json").stdout)["queues"]] == ["q"]
