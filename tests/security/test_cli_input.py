"""Hostile payloads, numbers, durations, files and URLs through the CLI, on every broker.

SPEC §7: bad input is exit 2 with one clear line (never "unexpected", never a traceback);
durations are at most 10 years; out-of-range numbers are bad input; credentials never
appear; SPEC §9: an envelope is at most 1 MiB by default.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from stem_core.ops import Ops
from tests.security.conftest import Cases, Target, clean, make_target, one_line_error, secret_urls, spec_params
from tests.security.corpus import (BAD_URLS, FAR_OFFSETS, HUGE_WAITS, LETTERS_UNDER_CAP, LIGHT_FLAGS, NUMBER_FLAGS, PAYLOADS, SENTINEL, URL_COMMANDS,
                                   BadUrl)
from tests.specs import SPECS, AdapterSpec, require_service

WORK = "work"
SPEC_IDS = {s.id: s for s in SPECS}


@pytest.mark.parametrize("target", spec_params(), indirect=True)
def test_payloads(target: Target) -> None:
    target.run(target.plant_canary)
    cases = Cases()
    for payload in PAYLOADS:
        if target.light and not payload.light:
            continue
        with cases.case(payload.id):
            result = target.cli("enqueue", "t", "-q", WORK, "--args", payload.text)
            clean(result.stdout, result.stderr, where="enqueue --args")
            code = payload.code_on(target.spec.id)
            assert result.exit_code == code, f"exit {result.exit_code}, not {code}: {result.stderr[:200]}"
            if code == 2:
                one_line_error(result, "enqueue --args")
            elif target.peeks:
                task_id = result.stdout.strip()
                shown = target.cli("inspect", "task", task_id, "--json")
                assert shown.exit_code == 0, shown.stderr
                clean(shown.stdout, shown.stderr, where="inspect task --json")
                assert json.loads(shown.stdout)["envelope"]["args"] == json.loads(payload.text)
    with cases.case("nothing-refused-enqueued"):
        accepted = sum(1 for p in PAYLOADS if p.code_on(target.spec.id) == 0 and (p.light or not target.light))
        assert target.live(WORK) == accepted
    with cases.case("canary"):
        target.run(target.assert_canary)
    cases.check()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", spec_params([SPEC_IDS["memory"]]), indirect=True)
def test_a_long_run_of_letters_under_the_cap_is_accepted(target: Target) -> None:
    """600 KB of letters in one argument (under the 1 MiB cap) is a legal task; the audit
    log's URL scrubbing must not backtrack over it quadratically (a hang, bounded here by
    the timeout marker, never a measured duration)."""
    result = target.cli("enqueue", "t", "-q", WORK, "--args", LETTERS_UNDER_CAP)
    clean(result.stdout, result.stderr, where="enqueue")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("target", spec_params(), indirect=True)
def test_out_of_range_numbers_and_durations(target: Target) -> None:
    cases = Cases()
    target.cli("enqueue", "t", "-q", WORK)  # so the queue exists for the read commands
    flags = [f for f in NUMBER_FLAGS if not target.light or f[0] in LIGHT_FLAGS]
    for case_id, command in flags:
        with cases.case(case_id):
            result = target.cli(*command)
            clean(result.stdout, result.stderr, where=case_id)
            assert result.exit_code == 2, f"exit {result.exit_code}, not 2: {result.stderr.strip()[:300]}"
            one_line_error(result, case_id)
    for case_id, command in FAR_OFFSETS if target.peeks else []:
        with cases.case(case_id):
            result = target.cli(*command)
            clean(result.stdout, result.stderr, where=case_id)
            # an empty page, or refused as over the cap; never a crash or a blocked server
            assert result.exit_code in (0, 2), f"exit {result.exit_code}: {result.stderr.strip()[:300]}"
    with cases.case("nothing-enqueued-by-refused-flags"):
        assert target.live(WORK) == 1
    cases.check()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", [pytest.param(c, id=i) for i, c in HUGE_WAITS])
@pytest.mark.parametrize("target", spec_params([SPEC_IDS["memory"]]), indirect=True)
def test_a_wait_beyond_ten_years_is_bad_input(target: Target, command: list[str]) -> None:
    """``stem broadcast ping --timeout 99999999d`` is exit 2 at once, not a wait of
    273,000 years (bounded here by the timeout marker)."""
    result = target.cli(*command)
    clean(result.stdout, result.stderr, where="broadcast --timeout")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    one_line_error(result, "broadcast --timeout")


@pytest.mark.parametrize("target", spec_params([s for s in SPECS if s.id in ("memory", "sqlite", "redis")]), indirect=True)
def test_bulk_file_with_a_bad_line_enqueues_nothing(target: Target, tmp_path: Path) -> None:
    target.run(target.plant_canary)
    cases = Cases()
    good = json.dumps({"task": "ok", "args": {"i": 1}})
    files = {
        "binary": b"\xff\xfe\x00garbage\x1b[31m\n",
        "long-name-line": (good + "\n" + json.dumps({"task": "n" * 9000}) + "\n").encode(),
        "nan-line": (good + "\n" + '{"task": "t", "args": {"x": NaN}}\n').encode(),
        "deep-line": (good + "\n" + '{"task": "t", "args": ' + "[" * 50_000 + "\n").encode(),
        "bad-queue-line": (good + "\n" + json.dumps({"task": "t", "queue": "../../etc"}) + "\n").encode(),
        "huge-priority-line": (good + "\n" + json.dumps({"task": "t", "priority": 10 ** 20}) + "\n").encode(),
        "huge-delay-line": (good + "\n" + json.dumps({"task": "t", "delay": "99999999d"}) + "\n").encode(),
        "huge-retries-line": (good + "\n" + json.dumps({"task": "t", "max_retries": 10 ** 20}) + "\n").encode(),
    }
    for case_id, content in files.items():
        with cases.case(case_id):
            path = tmp_path / f"{case_id}.jsonl"
            path.write_bytes(content)
            result = target.cli("enqueue", "-q", WORK, "--file", str(path))
            clean(result.stdout, result.stderr, where=case_id)
            assert result.exit_code == 2, f"exit {result.exit_code}, not 2: {result.stderr.strip()[:300]}"
            one_line_error(result, case_id)
    with cases.case("nothing-enqueued"):
        assert target.live(WORK) == 0
    with cases.case("canary"):
        target.run(target.assert_canary)
    cases.check()


@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in BAD_URLS])
def test_urls_carrying_a_secret_never_show_it(bad: BadUrl, tmp_path: Path) -> None:
    """Every command given a URL that cannot work: the documented exit code, one line, and
    the sentinel in none of stdout and stderr (``stem config`` shows the URL redacted)."""
    # amqp:// and sqs:// are brokers only: their URL is tried as the broker, the backend is memory
    backend = f"memory://{uuid.uuid4().hex}" if bad.url.split(":", 1)[0] in ("amqp", "amqps", "sqs") else bad.url
    target = Target(spec=SPECS[0], url=bad.url, backend_url=backend, namespace="s" + uuid.uuid4().hex[:12])
    cases = Cases()
    # moto's client retries a refused endpoint with backoff: fewer commands there
    for command in URL_COMMANDS if bad.id != "sqs-secret-down" else URL_COMMANDS[::2]:
        label = " ".join(command)
        with cases.case(label):
            result = target.cli(*command, "--broker", bad.url, "--backend", backend)
            clean(result.stdout, result.stderr, where=label)
            if command[0] == "config":
                assert result.exit_code in {0} | bad.codes, (result.exit_code, result.stderr)
            elif command[0] == "health":  # one error line per server it could not use
                assert result.exit_code in bad.codes, f"exit {result.exit_code}, not {sorted(bad.codes)}: {result.stderr[:300]}"
                assert all(line.startswith("error: ") for line in result.stderr.splitlines()), result.stderr
            else:
                assert result.exit_code in bad.codes, f"exit {result.exit_code}, not {sorted(bad.codes)}: {result.stderr[:300]}"
                one_line_error(result, label)
    with cases.case("env-not-flag"):
        result = target.cli("inspect", "queues", env={"STEM_BROKER_URL": bad.url, "STEM_RESULT_BACKEND_URL": backend})
        clean(result.stdout, result.stderr, where="env")
        assert result.exit_code in bad.codes, (result.exit_code, result.stderr)
    cases.check()


@pytest.mark.parametrize("spec", spec_params())
def test_a_working_session_with_secret_urls_never_shows_them(spec: AdapterSpec, tmp_path: Path) -> None:
    """A whole operator session on URLs carrying the sentinel (user info and
    ``sslpassword``): outputs, errors, JSON and the audit records (read through the Ops
    API) never hold it."""
    require_service("redis")
    require_service("postgres")
    target = make_target(spec, tmp_path)
    target.url, target.backend_url = secret_urls(spec, tmp_path)
    cases = Cases()
    try:
        target.run(target.plant_canary)
        commands = [["config"], ["config", "--json"], ["health"], ["health", "--json"],
                    ["inspect", "queues", "--sample", "0"], ["inspect", "queues", "--json", "--sample", "0"],
                    ["enqueue", "t", "-q", WORK, "--reason", "r"], ["purge", WORK, "--yes", "--reason", "r"],
                    ["inspect", "audit"], ["inspect", "audit", "--json"], ["inspect", "workers", "--json"],
                    ["broadcast", "ping", "--timeout", "200ms"]]
        for command in commands:
            label = " ".join(command)
            with cases.case(label):
                result = target.cli(*command)
                clean(result.stdout, result.stderr, where=label)
                assert result.exit_code in (0, 1), (result.exit_code, result.stderr)

        async def audit(ops: Ops) -> list[dict]:
            return await ops.audit_log(100)

        with cases.case("audit-records"):
            records = target.run(audit)
            assert records, "the actions left no audit record"
            clean(json.dumps(records, ensure_ascii=False), where="audit records")
        with cases.case("canary"):
            target.run(target.assert_canary)
    finally:
        import asyncio

        from tests.security.conftest import cleanup

        asyncio.run(cleanup(target))
    cases.check()


def test_the_embedded_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """SPEC §9: the SQLite file (and its WAL) is created 0600 whatever the umask."""
    db = tmp_path / "fresh" / "stem.db"
    url = f"sqlite://{db.as_posix()}"
    target = Target(spec=SPECS[1], url=url, backend_url=url, namespace="s" + uuid.uuid4().hex[:12])
    old = os.umask(0o022)
    try:
        result = target.cli("enqueue", "t", "-q", WORK, "--args", json.dumps({"card": SENTINEL}))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    for path in db.parent.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}: other users can read the payloads"
