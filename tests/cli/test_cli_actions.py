"""``stem enqueue / requeue / purge / dlq / broadcast / health / config`` in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stem_core.control.pause import paused_queues
from stem_core.ops import Ops
from tests.cli.conftest import Cli
from tests.cli.helpers import claim, heartbeat


def stats(cli: Cli, queue: str = "q") -> Any:
    async def go(ops: Ops) -> Any:
        return (await ops.broker.queue_stats([queue]))[0]

    return cli.seed(go)


def test_enqueue_prints_the_id_and_json(cli: Cli) -> None:
    result = cli("enqueue", "mail.send", "--args", '{"to": "a@b.c"}', "--arg", "n=5", "--arg", "s=hi", "-q", "emails",
                 "--priority", "7", "--max-retries", "2", "--id", "task-1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "task-1"
    doc = json.loads(cli("inspect", "task", "task-1", "--json").stdout)
    assert doc["envelope"]["args"] == {"to": "a@b.c", "n": 5, "s": "hi"}
    assert (doc["envelope"]["priority"], doc["envelope"]["maxRetries"], doc["queue"]) == (7, 2, "emails")
    out = json.loads(cli("enqueue", "mail.send", "-q", "emails", "--delay", "10m", "--json").stdout)
    assert out["action"] == "enqueue" and out["count"] == 1 and len(out["detail"]["ids"]) == 1
    assert stats(cli, "emails").delayed == 1
    eta = cli("enqueue", "mail.send", "-q", "emails", "--eta", "2099-01-01T00:00:00Z")
    assert eta.exit_code == 0 and stats(cli, "emails").delayed == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["t", "--args", "{nope"], "invalid JSON in --args"),
        (["t", "--args", "[1, 2]"], "must be a JSON object"),
        (["t", "--delay", "soon"], "invalid --delay"),
        (["t", "--delay", "5s", "--eta", "2099-01-01T00:00:00Z"], "not both"),
        (["t", "--eta", "tomorrow"], "invalid --eta"),
        (["t", "-q", "bad queue"], "invalid queue name"),
        (["t", "--priority", "11"], "priority"),
        (["t", "--arg", "novalue"], "use key=value"),
        ([], "name the TASK"),
    ],
)
def test_enqueue_rejects_bad_input_with_one_line_and_exit_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli("enqueue", *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_enqueue_from_a_file_and_stdin(cli: Cli, tmp_path: Path) -> None:
    lines = [json.dumps({"args": {"i": i}}) for i in range(5)] + ["", json.dumps({"task": "other", "queue": "side", "delay": "1h"})]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli("enqueue", "mail.send", "-q", "bulk", "--file", str(path))
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split()) == 6
    assert stats(cli, "bulk").pending == 5 and stats(cli, "side").delayed == 1
    piped = cli("enqueue", "--file", "-", "--json", input='{"task": "a", "queue": "bulk"}\n{"task": "b", "queue": "bulk"}\n')
    assert json.loads(piped.stdout)["count"] == 2 and stats(cli, "bulk").pending == 7
    dry = json.loads(cli("enqueue", "mail.send", "-q", "bulk", "--file", str(path), "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["count"] == 6 and stats(cli, "bulk").pending == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"args": {}}\n{"args": {"x": 1}\n', "line 2: invalid JSON"),
        ('{"args": {}, "colour": "red"}\n', "line 1: unknown key(s) colour"),
        ('[1]\n', "line 1: expected a JSON object"),
        ('{"args": {}, "queue": "no spaces allowed"}\n', "item 1"),
        ("\n\n", "holds no JSON lines"),
    ],
)
def test_enqueue_file_errors_name_the_line_and_enqueue_nothing(cli: Cli, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result = cli("enqueue", "t", "-q", "bulk", "--file", str(path))
    assert result.exit_code == 2 and message in result.stderr
    assert cli("enqueue", "t", "--file", str(tmp_path / "missing.jsonl")).exit_code == 2


def dead_worker_scene(cli: Cli) -> list[str]:
    async def go(ops: Ops) -> list[str]:
        await ops.enqueue_many([("t.work", {"i": i}, {"queue": "q"}) for i in range(4)])
        held = await claim(ops.broker, ["q"], "w-dead", 2)
        await ops.backend.set_heartbeat(heartbeat("w-dead", ["q"], age=60))
        return [d.envelope.id for d in held]

    return cli.seed(go)


def test_requeue_expired_leases_dry_run_refusal_and_yes(cli: Cli) -> None:
    held = dead_worker_scene(cli)
    dry = json.loads(cli("requeue", "q", "--expired-leases", "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["count"] == 2 and sorted(dry["detail"]["ids"]) == sorted(held)
    refused = cli("requeue", "q", "--expired-leases")
    assert refused.exit_code == 2 and "requeue 2 stuck lease(s) of q: refusing without --yes" in refused.stderr
    assert stats(cli).inflight == 2
    done = cli("requeue", "q", "--expired-leases", "--yes", "--reason", "box died")
    assert done.exit_code == 0 and "requeue: 2" in done.stdout
    s = stats(cli)
    assert (s.pending, s.inflight) == (4, 0)
    again = cli("requeue", "q", "--stuck-leases", "--yes")
    assert again.exit_code == 0 and "nothing to requeue" in again.stdout


def test_requeue_interactive_confirmation(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    dead_worker_scene(cli)
    monkeypatch.setattr("stem_tui.cli.output.stdin_is_terminal", lambda: True)
    no = cli("requeue", "q", "--expired-leases", input="n\n")
    assert no.exit_code == 1 and "requeue 2 stuck lease(s) of q? [y/N]" in no.stderr and stats(cli).inflight == 2
    yes = cli("requeue", "q", "--expired-leases", input="y\n")
    assert yes.exit_code == 0 and stats(cli).inflight == 0


def test_requeue_usage_errors(cli: Cli) -> None:
    dead_worker_scene(cli)
    assert cli("requeue", "q").exit_code == 2
    assert "delay applies to dead letters" in cli("requeue", "q", "--id", "x", "--delay", "5s", "--yes").stderr
    assert cli("requeue", "q", "--dead", "--since", "yesterday").exit_code == 2
    assert cli("requeue", "nope", "--expired-leases", "--yes").exit_code == 1


def dead_letters(cli: Cli) -> list[str]:
    async def go(ops: Ops) -> list[str]:
        await ops.enqueue_many([("t.a", {}, {"queue": "q"}), ("t.b", {}, {"queue": "q"}), ("t.a", {}, {"queue": "q"})])
        held = await claim(ops.broker, ["q"], "w", 3)
        for delivery in held:
            await ops.broker.dead_letter(delivery, reason="boom")
        return [d.envelope.id for d in held]

    return cli.seed(go)


def test_dlq_list_show_replay_purge(cli: Cli) -> None:
    ids = dead_letters(cli)
    page = json.loads(cli("dlq", "list", "q", "--json").stdout)
    assert len(page["entries"]) == 3 and page["next_offset"] is None
    assert "boom" in cli("dlq", "list", "q").stdout
    assert len(cli("dlq", "list", "q", "--limit", "1", "--jsonl").stdout.splitlines()) == 1
    shown = json.loads(cli("dlq", "show", "q", ids[0], "--json").stdout)
    assert shown["reason"] == "boom" and shown["envelope"]["id"] == ids[0]
    assert f"stem dlq replay q --id {ids[0]}" in cli("dlq", "show", "q", ids[0]).stdout
    assert cli("dlq", "show", "q", "missing").exit_code == 1
    dry = json.loads(cli("dlq", "replay", "q", "--task", "t.a", "--dry-run", "--json").stdout)
    assert dry["count"] == 2
    replayed = json.loads(cli("requeue", "q", "--dead", "--task", "t.a", "--since", "1h", "--yes", "--json").stdout)
    assert replayed["count"] == 2 and stats(cli).pending == 2
    assert cli("dlq", "purge", "q").exit_code == 2
    assert json.loads(cli("dlq", "purge", "q", "--yes", "--json").stdout)["count"] == 1 and stats(cli).dead == 0


def test_purge_and_remove(cli: Cli) -> None:
    ids = json.loads(cli("enqueue", "--file", "-", "--json",
                         input="".join('{"task": "t", "queue": "q"}\n' for _ in range(3))).stdout)["detail"]["ids"]
    assert json.loads(cli("purge", "q", "--dry-run", "--json").stdout)["count"] == 3
    assert cli("purge", "q", "--id", ids[0], "--yes").exit_code == 0 and stats(cli).pending == 2
    assert cli("purge", "q", "--id", "x", "--dead").exit_code == 2
    assert "purge: 2" in cli("purge", "q", "--yes").stdout and stats(cli).pending == 0
    # an emptied queue is gone: naming it again is reported, not silently accepted
    gone = cli("purge", "q")
    assert gone.exit_code == 1 and "unknown queue 'q'" in gone.stderr


def test_broadcast_without_workers(cli: Cli) -> None:
    ping = cli("broadcast", "ping", "--timeout", "300ms")
    assert ping.exit_code == 1 and "no worker answered ping" in ping.stderr
    assert cli("broadcast", "explode").exit_code == 2
    assert cli("broadcast", "shutdown", "--mode", "gentle").exit_code == 2
    assert "refusing without --yes" in cli("broadcast", "shutdown", "--timeout", "300ms").stderr
    assert cli("broadcast", "pause").exit_code == 2


def test_broadcast_pause_and_resume_are_persisted(cli: Cli) -> None:
    cli("enqueue", "t", "-q", "q")
    paused = cli("broadcast", "pause", "-q", "q", "--reason", "deploy", "--until", "30m", "--json")
    assert paused.exit_code == 0, paused.stderr
    assert json.loads(paused.stdout)["count"] == 1

    async def pauses(ops: Ops) -> dict[str, Any]:
        return await paused_queues(ops.backend)

    record = cli.seed(pauses)["q"]
    assert record["reason"] == "deploy" and record["by"] == "tester@cli" and record["until"]
    row = json.loads(cli("inspect", "queues", "--json", "--sample", "0").stdout)["queues"][0]
    assert row["paused"] and row["verdict"] == "paused"
    assert cli("broadcast", "resume", "-q", "q").exit_code == 0 and cli.seed(pauses) == {}


def test_raw_broadcast_on_a_channel(cli: Cli) -> None:
    done = json.loads(cli("broadcast", "--channel", "news", "t.hello", "--args", '{"a": 1}', "--json").stdout)
    assert done["action"] == "broadcast-raw" and done["count"] == 1
    assert cli("broadcast", "--channel", "bad channel", "t.hello").exit_code == 2


def test_health_and_checks(cli: Cli) -> None:
    report = json.loads(cli("health", "--json").stdout)
    assert report["ok"] and [s["role"] for s in report["servers"]] == ["broker", "result backend"]
    assert report["servers"][0]["capabilities"]["peek"] is True and report["servers"][0]["rtt_ms"] >= 0
    assert "broker" in cli("health").stdout
    failed = cli("health", "--require-workers")
    assert failed.exit_code == 1 and "FAIL workers" in failed.stdout
    dead_worker_scene(cli)
    assert cli("health", "--no-stuck").exit_code == 1
    assert cli("health", "--max-age", "1h").exit_code == 0


def test_config_redacts_and_names_sources(cli: Cli) -> None:
    doc = json.loads(cli("config", "--json", "--broker", "redis://ann:s3cret@db:6379/0").stdout)
    assert doc["broker_url"] == "redis://ann:***@db:6379/0" and doc["broker_source"] == "flag"
    assert doc["backend_source"] == "STEM_RESULT_BACKEND_URL" and doc["actor"] == "tester@cli"
    table = cli("config", "--broker", "redis://ann:s3cret@db:6379/0")
    assert "s3cret" not in table.stdout and "redis://ann:***@db:6379/0" in table.stdout


def test_bulk_enqueue_shows_a_progress_bar_on_a_terminal(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps({"args": {"i": i}}) + "\n" for i in range(1200)))
    monkeypatch.setattr("stem_tui.cli.output.is_terminal", lambda stream=None: True)
    result = cli("enqueue", "t.bulk", "-q", "bulk", "--file", str(path))
    assert result.exit_code == 0, result.stderr
    assert "1200/1200" in result.stderr and len(result.stdout.split()) == 1200
    assert stats(cli, "bulk").pending == 1200


@pytest.mark.parametrize("errors", [{}, {"w2": "queue 'x' is not consumed here"}])
def test_broadcast_names_the_workers_that_failed_and_only_then_fails(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                                      errors: dict[str, str]) -> None:
    # Given two workers that both answer, one of them perhaps with an error
    from stem_core.control.client import ControlClient, ControlResult

    async def send(self: Any, command: str, arguments: Any = None, *, targets: Any = None, timeout: float = 5) -> ControlResult:
        replies = {w: ({"error": errors[w]} if w in errors else {"pong": True}) for w in ("w1", "w2")}
        return ControlResult(command=command, targeted=["w1", "w2"], replies=replies, missing=[])

    monkeypatch.setattr(ControlClient, "send", send)
    result = cli("broadcast", "ping")
    if not errors:
        # Then all answering well is a success (it used to say "failed on: some workers")
        assert result.exit_code == 0 and "failed" not in result.stderr, result.stderr
    else:
        assert result.exit_code == 1
        assert "failed on 1 of 2 worker(s)" in result.stderr and "w2: queue 'x' is not consumed here" in result.stderr
        assert "some workers" not in result.stderr
