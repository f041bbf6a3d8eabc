"""``stem schedule ...`` over a memory store: add/list/show (tables and --json),
pause/resume/run-now/remove audited with their equivalent command, bad input exit 2."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stem_core.ops import Ops

from .conftest import Cli


def audit(cli: Cli) -> list[dict[str, Any]]:
    async def go(ops: Ops) -> list[dict[str, Any]]:
        return await ops.audit_log()

    return cli.seed(go)


def test_add_list_show_and_actions(cli: Cli) -> None:
    added = cli("schedule", "add", "nightly", "report.build", "cron 0 3 * * *", "--tz", "Europe/Paris",
                "--args", '{"kind": "daily"}', "--catch-up", "all", "--json")
    assert added.exit_code == 0, added.output
    body = json.loads(added.output)
    assert body["action"] == "schedule-add" and body["audit_id"]
    assert body["command"] == "stem schedule add nightly report.build 'cron 0 3 * * *' --args '{\"kind\":\"daily\"}' " \
                              "--tz Europe/Paris --catch-up all"
    listed = cli("schedule", "list")
    assert listed.exit_code == 0 and "nightly" in listed.output and "cron 0 3 * * * (Europe/Paris)" in listed.output
    [row] = json.loads(cli("schedule", "list", "--json").output)
    assert row["id"] == "nightly" and row["paused"] is False and row["next_run"].endswith("Z")
    shown = json.loads(cli("schedule", "show", "nightly", "--json").output)
    assert shown["args"] == {"kind": "daily"} and shown["catch_up"] == "all"

    assert cli("schedule", "pause", "nightly", "--reason", "maintenance").exit_code == 0
    assert json.loads(cli("schedule", "show", "nightly", "--json").output)["paused"] is True
    assert cli("schedule", "resume", "nightly").exit_code == 0
    ran = json.loads(cli("schedule", "run-now", "nightly", "--json").output)
    [task_id] = ran["detail"]["ids"]
    assert json.loads(cli("schedule", "show", "nightly", "--json").output)["last_task_id"] == task_id
    assert cli("schedule", "remove", "nightly").exit_code == 0
    assert json.loads(cli("schedule", "list", "--json").output) == []

    actions = [r["action"] for r in audit(cli)]
    assert actions[:5] == ["schedule-remove", "schedule-run-now", "schedule-resume", "schedule-pause", "schedule-add"]
    assert audit(cli)[3]["reason"] == "maintenance"


@pytest.mark.parametrize("args,message", [
    (["every never"], "invalid schedule"),
    (["cron 99 * * * *"], "invalid schedule"),
    (["cron 0 3 * * *", "--tz", "Nowhere/Land"], "time zone"),
    (["every 5s", "--catch-up", "some"], "--catch-up"),
    (["every 5s", "--args", "[1]"], "--args"),
])
def test_bad_specs_are_one_line_and_exit_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli("schedule", "add", "s1", "t.x", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_add_twice_and_unknown_ids(cli: Cli) -> None:
    assert cli("schedule", "add", "s1", "t.x", "every 5s").exit_code == 0
    again = cli("schedule", "add", "s1", "t.x", "every 10s")
    assert again.exit_code == 2 and "exists already" in again.output
    for verb in ("show", "pause", "resume", "run-now", "remove"):
        result = cli("schedule", verb, "nope")
        assert result.exit_code == 1 and "no schedule 'nope'" in result.output, (verb, result.output)


@pytest.mark.parametrize(("flags", "spec"), [
    (["--every", "30s"], "every 30s"),
    (["--cron", "*/5 * * * *"], "cron */5 * * * *"),
    (["--at", "2027-01-01T00:00Z"], "at 2027-01-01T00:00:00.000Z"),
    (["45s"], "every 45s"),  # a bare duration is an interval
])
def test_the_spec_as_an_option_or_a_bare_duration(cli: Cli, flags: list[str], spec: str) -> None:
    added = cli("schedule", "add", "s1", "report.build", *flags)
    assert added.exit_code == 0, added.output
    assert json.loads(cli("schedule", "show", "s1", "--json").output)["spec"] == spec


@pytest.mark.parametrize("flags", [[], ["every 1s", "--every", "2s"], ["--every", "1s", "--cron", "* * * * *"]])
def test_the_spec_must_be_given_exactly_once(cli: Cli, flags: list[str]) -> None:
    result = cli("schedule", "add", "s1", "report.build", *flags)
    assert result.exit_code == 2
    assert "give the schedule once" in result.output
