"""``stem inspect ...`` in-process: tables, ``--json``/``--jsonl``, ``--watch``, exit codes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stem_core.ops import Ops
from tests.cli.conftest import Cli
from tests.cli.helpers import claim, heartbeat, inflight_entry


def scene(cli: Cli) -> dict[str, Any]:
    """3 pending + 1 delayed in emails, one held by a live worker, one by a dead one, a dead letter."""

    async def go(ops: Ops) -> dict[str, Any]:
        ids = (await ops.enqueue_many([("mail.send", {"to": f"u{i}"}, {"queue": "emails"}) for i in range(6)])).detail.ids
        await ops.enqueue("mail.digest", {}, queue="emails", delay=3600)
        live = await claim(ops.broker, ["emails"], "w-live", 1)
        dead = await claim(ops.broker, ["emails"], "w-dead", 1)
        (gone,) = await claim(ops.broker, ["emails"], "w-live", 1)
        await ops.broker.dead_letter(gone, reason="max-retries-exhausted")
        await ops.backend.set_heartbeat(heartbeat("w-live", ["emails"], inflight=[inflight_entry(live[0])]))
        await ops.backend.set_heartbeat(heartbeat("w-dead", ["emails"], age=50, inflight=[inflight_entry(dead[0])]))
        return {"ids": ids, "live": live[0].envelope.id, "dead": dead[0].envelope.id, "gone": gone.envelope.id}

    return cli.seed(go)


def test_inspect_queues_table_json_and_jsonl(cli: Cli) -> None:
    scene(cli)
    table = cli("inspect", "queues", "--sample", "0")
    assert table.exit_code == 0, table.stderr
    assert "emails" in table.stdout and "VERDICT" in table.stdout and "1 live worker(s)" in table.stdout
    doc = json.loads(cli("inspect", "queues", "--json", "--sample", "0").stdout)
    (row,) = doc["queues"]
    assert (row["queue"], row["pending"], row["delayed"], row["inflight"], row["dead"]) == ("emails", 3, 1, 2, 1)
    assert row["workers"] == ["w-live"] and doc["live_workers"] == 1 and doc["capabilities"]["peek"] is True
    lines = cli("inspect", "queues", "--jsonl", "--sample", "0").stdout.splitlines()
    assert [json.loads(line)["queue"] for line in lines] == ["emails"]


def test_inspect_queues_gets_rates_by_sampling_twice_when_there_is_no_history(cli: Cli) -> None:
    scene(cli)
    row = json.loads(cli("inspect", "queues", "--json", "--sample", "600ms").stdout)["queues"][0]
    assert row["rate_window"] >= 0.5 and row["net_rate"] is not None and row["verdict"] != "unknown"


def test_inspect_queue_pages_by_cursor(cli: Cli) -> None:
    # Given 3 pending messages, read two at a time
    scene(cli)

    def ids(doc: dict[str, Any]) -> list[str]:
        return [m["envelope"]["id"] for m in doc["messages"]]

    whole = json.loads(cli("inspect", "queue", "emails", "--json").stdout)
    first = json.loads(cli("inspect", "queue", "emails", "--limit", "2", "--json").stdout)
    assert first["cursor"] is None and first["next_cursor"]
    # When the next page is asked for by the first page's next_cursor
    result = cli("inspect", "queue", "emails", "--limit", "2", "--cursor", first["next_cursor"], "--json")
    assert result.exit_code == 0, result.stderr
    rest = json.loads(result.stdout)
    # Then the two pages are the whole queue in order, and the second is the last
    assert ids(first) + ids(rest) == ids(whole) and len(ids(whole)) == 3
    assert rest["cursor"] == first["next_cursor"] and rest["next_cursor"] is None and rest["next_offset"] is None
    # And the table says how to get the next page
    assert f"more: --cursor {first['next_cursor']}" in cli("inspect", "queue", "emails", "--limit", "2").stdout


@pytest.mark.parametrize("args, says", [
    (("--cursor", "garbage"), "invalid pending cursor"),
    (("--cursor", "kp:1:2:3' OR 1=1 --"), "invalid pending cursor"),
    (("--cursor", "\x1b[2Jkp:1:2:3", "--state", "delayed"), "invalid delayed cursor"),
    (("--cursor", "x" * 600), "cursor must be a next_cursor"),
    (("--cursor", "kp:0:1.5:1", "--offset", "1"), "a cursor or an offset, not both"),
    (("--cursor", "kp:0:1.5:1", "--state", "dead"), "dead letters page by offset"),
])
def test_inspect_queue_refuses_a_bad_cursor_in_one_line(cli: Cli, args: tuple[str, ...], says: str) -> None:
    scene(cli)
    result = cli("inspect", "queue", "emails", *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and "\x1b" not in result.stderr
    assert says in result.stderr, result.stderr


def test_watch_refreshes_with_an_interval_and_streams_jsonl(cli: Cli) -> None:
    scene(cli)
    result = cli("inspect", "queues", "--watch", "500ms", "--frames", "2", "--jsonl")
    assert result.exit_code == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(frames) == 2 and all(f["queues"][0]["queue"] == "emails" for f in frames)
    # the second frame has the first as its rate baseline
    assert frames[1]["queues"][0]["rate_window"] is not None
    table = cli("inspect", "workers", "--watch=500ms", "--frames", "2")
    assert table.exit_code == 0 and table.stdout.count("w-live") == 2
    assert cli("inspect", "leases", "--watch", "--json").exit_code == 2


def test_inspect_queue_pages_each_state(cli: Cli) -> None:
    info = scene(cli)
    pending = json.loads(cli("inspect", "queue", "emails", "--json").stdout)
    assert pending["state"] == "pending" and len(pending["messages"]) == 3 and pending["overview"]["pending"] == 3
    page = json.loads(cli("inspect", "queue", "emails", "--limit", "2", "--json").stdout)
    assert len(page["messages"]) == 2 and page["next_offset"] == 2
    delayed = cli("inspect", "queue", "emails", "--state", "delayed", "--jsonl").stdout.splitlines()
    assert [json.loads(line)["envelope"]["name"] for line in delayed] == ["mail.digest"]
    dead = json.loads(cli("inspect", "queue", "emails", "--state", "dead", "--json").stdout)
    assert dead["messages"][0]["envelope"]["id"] == info["gone"]
    inflight = cli("inspect", "queue", "emails", "--state", "inflight")
    assert "w-dead" in inflight.stdout and "w-live" in inflight.stdout
    assert cli("inspect", "queue", "emails", "--state", "done").exit_code == 2
    missing = cli("inspect", "queue", "emials")
    assert missing.exit_code == 1 and "did you mean emails" in missing.stderr and missing.stderr.count("\n") == 1


def test_inspect_task_explains_and_exits_1_when_unknown(cli: Cli) -> None:
    info = scene(cli)
    held = cli("inspect", "task", info["dead"])
    assert held.exit_code == 0 and "dead-holder" in held.stdout and f"stem requeue emails --id {info['dead']}" in held.stdout
    doc = json.loads(cli("inspect", "task", info["live"], "--json").stdout)
    assert doc["state"] == "running" and doc["lease"]["holder"] == "w-live"
    queued = json.loads(cli("inspect", "task", info["ids"][-1], "--json").stdout)
    assert queued["state"] == "queued" and queued["position"] == 3
    unknown = cli("inspect", "task", "no-such-id")
    assert unknown.exit_code == 1 and "unknown-id" in unknown.stdout


def test_inspect_workers_and_leases(cli: Cli) -> None:
    info = scene(cli)
    workers = {w["worker_id"]: w for w in json.loads(cli("inspect", "workers", "--json").stdout)}
    assert workers["w-dead"]["stale"] is True and workers["w-live"]["stale"] is False
    leases = {lease["id"]: lease for lease in json.loads(cli("inspect", "leases", "--json").stdout)}
    assert leases[info["dead"]]["stuck"] is True and leases[info["live"]]["stuck"] is False
    stuck = [json.loads(line) for line in cli("inspect", "leases", "emails", "--stuck", "--jsonl").stdout.splitlines()]
    assert [lease["id"] for lease in stuck] == [info["dead"]]
    table = cli("inspect", "leases", "emails")
    assert "STUCK" in table.stdout and "--expired-leases --dry-run" in table.stdout
    # a shorter stale threshold from the flag (twin of STEM_STALE_AFTER) makes no difference here;
    # a longer one makes the dead worker look alive
    relaxed = json.loads(cli("inspect", "leases", "--json", "--stale-after", "10m").stdout)
    assert not any(lease["stuck"] for lease in relaxed)


def test_inspect_audit_lists_actions_newest_first(cli: Cli) -> None:
    scene(cli)
    cli("purge", "emails", "--yes", "--reason", "test cleanup")
    rows = json.loads(cli("inspect", "audit", "--json").stdout)
    assert rows[0]["action"] == "purge" and rows[0]["actor"] == "tester@cli" and rows[0]["reason"] == "test cleanup"
    assert "purge" in cli("inspect", "audit").stdout


def test_empty_namespace_reads(cli: Cli) -> None:
    assert "no queues yet" in cli("inspect", "queues", "--sample", "0").stdout
    assert "no worker heartbeats" in cli("inspect", "workers").stdout
    assert "no messages in flight" in cli("inspect", "leases").stdout
    assert json.loads(cli("inspect", "leases", "--json").stdout) == []


def test_on_a_terminal_watch_redraws_in_place(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    scene(cli)
    monkeypatch.setattr("stem_tui.cli.output.is_terminal", lambda stream=None: True)
    result = cli("inspect", "queues", "--watch", "500ms", "--frames", "2")
    assert result.exit_code == 0, result.stderr
    # Rich Live moves the cursor back up to redraw the table instead of printing it twice
    assert result.stdout.count("emails") >= 2 and "\x1b[" in result.stdout


def test_watch_keeps_going_when_the_broker_drops_out(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from stem_core.errors import BrokerUnavailable
    from stem_core.ops import Ops as OpsClass

    scene(cli)
    real = OpsClass.workers
    calls = {"n": 0}

    async def flaky(self: OpsClass) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BrokerUnavailable("redis at redis://x:***@h went away")
        return await real(self)

    monkeypatch.setattr(OpsClass, "workers", flaky)
    result = cli("inspect", "workers", "--watch", "500ms", "--frames", "1", "--jsonl")
    first, second = result.stdout.splitlines()
    assert result.exit_code == 0 and "went away" in json.loads(first)["error"]
    assert {w["worker_id"] for w in json.loads(second)} == {"w-live", "w-dead"}
