"""Issue 15, bounds: out-of-range numbers, durations, names and sizes are bad input: one
line on stderr and exit 2, never an ``OverflowError``, a traceback or "unavailable"."""

from __future__ import annotations

import json

import pytest

from stem_core.limits import NAME_MAX_LENGTH
from tests.cli.conftest import Cli

HUGE = "99999999999999999999"
LONG_NAME = "t" * 9000


def assert_bad_input(result: object) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)  # type: ignore[attr-defined]
    text = result.output  # type: ignore[attr-defined]
    assert "Traceback" not in text and "unexpected" not in text and "OverflowError" not in text
    assert text.strip() and len(text.strip().splitlines()) <= 4, text  # Typer boxes a usage error in a few lines


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "t", "--delay", "99999999d"),
        ("broadcast", "ping", "--timeout", "99999999d"),
        ("broadcast", "pause", "--queue", "q", "--until", "99999999d"),
        ("requeue", "q", "--dead", "--since", "99999999d", "--dry-run"),
        ("purge", "q", "--dead", "--since", "99999999d", "--yes"),
        ("inspect", "queues", "--watch", "--interval", "99999999d", "--frames", "1", "--jsonl"),
        ("enqueue", "t", "--max-retries", HUGE),
        ("inspect", "queue", "q", "--limit", HUGE),
        ("inspect", "queue", "q", "--offset", HUGE),
        ("inspect", "queue", "q", "--offset", "10001"),
        ("dlq", "list", "q", "--limit", "1001"),
        ("requeue", "q", "--dead", "--limit", HUGE, "--dry-run"),
        ("enqueue", LONG_NAME),
        ("enqueue", "t" * (NAME_MAX_LENGTH + 1)),
    ],
    ids=lambda a: " ".join(a)[:60],
)
def test_out_of_range_input_is_bad_input(cli: Cli, args: tuple[str, ...]) -> None:
    assert_bad_input(cli(*args))


def test_a_task_name_of_200_characters_is_fine(cli: Cli) -> None:
    result = cli("enqueue", "t" * NAME_MAX_LENGTH)
    assert result.exit_code == 0, result.output


def test_a_long_task_name_in_a_file_is_bad_input_and_nothing_is_enqueued(cli: Cli) -> None:
    lines = json.dumps({"task": "ok"}) + "\n" + json.dumps({"task": LONG_NAME}) + "\n"
    result = cli("enqueue", "--file", "-", input=lines)
    assert_bad_input(result)
    assert "200" in result.output
    assert json.loads(cli("inspect", "queues", "--json").stdout)["queues"] == []


def test_an_envelope_over_the_size_limit_is_bad_input(cli: Cli) -> None:
    env = {"STEM_MAX_ENVELOPE_BYTES": "2048"}
    result = cli("enqueue", "t", "--args", json.dumps({"blob": "x" * 4000}), env=env)
    assert_bad_input(result)
    assert "STEM_MAX_ENVELOPE_BYTES" in result.output and "2048" in result.output
    assert cli("enqueue", "t", "--args", json.dumps({"blob": "x" * 1000}), env=env).exit_code == 0


def test_a_bad_max_envelope_setting_is_bad_input(cli: Cli) -> None:
    result = cli("enqueue", "t", env={"STEM_MAX_ENVELOPE_BYTES": "lots"})
    assert_bad_input(result)
    assert "STEM_MAX_ENVELOPE_BYTES" in result.output
