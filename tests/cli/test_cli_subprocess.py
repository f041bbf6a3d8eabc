"""The real ``stem`` executable against SQLite and Redis: round trips, exit codes, one-line
errors without tracebacks, neutralised output and redacted credentials."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.specs import SPECS, AdapterSpec, require_service

STEM = str(Path(sys.executable).parent / "stem")
SUBPROCESS_SPECS = [s for s in SPECS if s.id in ("sqlite", "redis")]
ROOT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 60


@dataclass
class Exe:
    url: str
    namespace: str
    backend_url: str | None = None

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
        full_env.update({"STEM_BROKER_URL": self.url, "STEM_NAMESPACE": self.namespace, "STEM_ACTOR": "tester@exe",
                         "COLUMNS": "200"})
        if self.backend_url is not None:
            full_env["STEM_RESULT_BACKEND_URL"] = self.backend_url
        full_env.update(env or {})
        return subprocess.run([STEM, *args], input=input.encode() if input is not None else None, capture_output=True,
                              env=full_env, cwd=ROOT, timeout=COMMAND_TIMEOUT_S)


@pytest.fixture(params=SUBPROCESS_SPECS, ids=lambda s: s.id)
def exe(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Exe]:
    spec: AdapterSpec = request.param
    require_service(spec.service)
    url = spec.url(tmp_path)
    yield Exe(url=url, namespace=namespace)
    if spec.cleanup is not None:
        asyncio.run(spec.cleanup(url, namespace))


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def one_line_error(result: subprocess.CompletedProcess[bytes], code: int, needle: str, *, quiet: bool = True) -> None:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == code, (code, result.returncode, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert "Traceback" not in err
    assert not quiet or result.stdout == b""


def test_enqueue_inspect_and_purge_round_trip(exe: Exe) -> None:
    task = ok(exe("enqueue", "mail.send", "--args", '{"to": "a@b.c"}', "-q", "emails")).strip()
    bulk = ok(exe("enqueue", "mail.send", "-q", "emails", "--file", "-", input='{"args": {"i": 1}}\n{"args": {"i": 2}}\n'))
    assert len(bulk.split()) == 2
    ok(exe("enqueue", "mail.later", "-q", "emails", "--delay", "1h"))
    row = json.loads(ok(exe("inspect", "queues", "--json", "--sample", "0")))["queues"][0]
    assert (row["queue"], row["pending"], row["delayed"], row["verdict"]) == ("emails", 3, 1, "no-workers")
    where = json.loads(ok(exe("inspect", "task", task, "--json")))
    assert where["state"] == "queued" and where["position"] == 1 and where["blockers"][0]["code"] == "no-workers"
    assert "no live worker serves queue emails" in ok(exe("inspect", "task", task))
    lines = ok(exe("inspect", "queue", "emails", "--jsonl")).splitlines()
    assert [json.loads(line)["envelope"]["id"] for line in lines][0] == task
    table = ok(exe("inspect", "queues", "--sample", "0"))
    assert "emails" in table and "\x1b" not in table  # piped: no colour codes
    assert json.loads(ok(exe("purge", "emails", "--dry-run", "--json")))["count"] == 4
    refused = exe("purge", "emails")
    one_line_error(refused, 2, "refusing without --yes")
    assert "purge: 4" in ok(exe("purge", "emails", "--yes", "--reason", "test"))
    audit = json.loads(ok(exe("inspect", "audit", "--json")))
    assert [r["action"] for r in audit][:1] == ["purge"] and audit[0]["actor"] == "tester@exe"


def test_watch_streams_one_json_line_per_refresh(exe: Exe) -> None:
    ok(exe("enqueue", "t", "-q", "q"))
    frames = ok(exe("inspect", "queues", "--watch", "500ms", "--frames", "2", "--jsonl")).splitlines()
    assert len(frames) == 2 and json.loads(frames[1])["queues"][0]["rate_window"] is not None


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["enqueue", "t", "--args", "{not json"], 2, "invalid JSON in --args"),
        (["inspect", "queue", "no-such-queue"], 1, "unknown queue 'no-such-queue'"),
        (["enqueue", "t", "--delay", "10 parsecs"], 2, "invalid --delay"),
        (["inspect", "queues", "--broker", "redis:/127.0.0.1"], 2, "malformed URL"),
        (["inspect", "queues", "--broker", "nosuch://x"], 2, "unknown URL scheme"),
        (["inspect", "queues", "--broker", "redis://127.0.0.1:1/0"], 3, "cannot reach"),
        (["inspect", "task", "x", "--backend", "redis://127.0.0.1:1/0"], 3, "cannot reach"),
        (["requeue", "q", "--dead", "--since", "last tuesday"], 2, "invalid --since"),
        (["inspect", "queue", "bad/name"], 2, "invalid queue name"),
        (["broadcast", "ping", "--timeout", "300ms"], 1, "no worker answered"),
    ],
)
def test_failure_modes_are_one_clear_line_and_the_right_exit_code(exe: Exe, args: list[str], code: int, needle: str) -> None:
    ok(exe("enqueue", "t", "-q", "known"))
    # broadcast shows who answered (nobody) before its error line
    one_line_error(exe(*args), code, needle, quiet=args[0] != "broadcast")


def test_hostile_names_are_neutralised_and_credentials_hidden(exe: Exe) -> None:
    evil = "x\x1b[31mred\x1b]0;title\x07[bold]b[/bold]\u202eevil"
    task = ok(exe("enqueue", evil, "--args", json.dumps({"k": "\x1b[2J"}), "-q", "q")).strip()
    for args in (["inspect", "queue", "q"], ["inspect", "task", task], ["inspect", "queue", "q", "--json"]):
        raw = exe(*args).stdout
        assert b"\x1b" not in raw and "\u202e".encode() not in raw and b"\x07" not in raw, args
    assert "[bold]b[/bold]" in ok(exe("inspect", "task", task))
    secret = "redis://ops:Sup3rSecret@127.0.0.1:1/0"
    for args in (["inspect", "queues"], ["health"], ["config"]):
        result = exe(*args, "--broker", secret)
        assert b"Sup3rSecret" not in result.stdout + result.stderr, args
    assert b"ops:***@" in exe("config", "--broker", secret).stdout


def test_health_reports_round_trip_and_capabilities(exe: Exe) -> None:
    report = json.loads(ok(exe("health", "--json")))
    broker = report["servers"][0]
    assert report["ok"] and broker["reachable"] and broker["rtt_ms"] >= 0 and broker["capabilities"]["durable"] is True
    down = exe("health", "--broker", "redis://127.0.0.1:1/0", "--backend", "redis://127.0.0.1:1/0")
    assert down.returncode == 3 and b"Traceback" not in down.stderr


def test_shell_completion_of_commands_and_choices() -> None:
    def complete(words: str) -> list[str]:
        env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
               "_STEM_COMPLETE": "complete_bash"}
        result = subprocess.run([STEM], env=env, capture_output=True, timeout=COMMAND_TIMEOUT_S)
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
        return result.stdout.decode().split()

    assert complete("stem insp") == ["inspect"]
    assert {"ping", "pause"} <= set(complete("stem broadcast p"))
    assert complete("stem inspect queue q --state ") == ["pending", "delayed", "inflight", "dead"]


def test_bare_group_prints_help_and_exits_2() -> None:
    result = subprocess.run([STEM, "inspect"], capture_output=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 2 and b"leases" in result.stdout and b"Traceback" not in result.stderr
