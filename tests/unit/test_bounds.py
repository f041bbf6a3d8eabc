"""Issue 15, bounds in the core: ``stem_core.limits`` and the places that use it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from stem_core import Envelope, Stem
from stem_core.durations import parse_duration, parse_time
from stem_core.envelope import delay_to_not_before
from stem_core.errors import ConfigurationError, EnvelopeTooLarge, InvalidEnvelope
from stem_core.limits import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    MAX_ATTEMPT,
    MAX_DURATION_SECONDS,
    MAX_RETRIES,
    NAME_MAX_LENGTH,
    check_int,
    check_page,
    check_seconds,
    check_task_name,
)
from stem_core.settings import max_envelope_bytes


@pytest.mark.parametrize("text", ["99999999d", "3654d", "87673h", "1" + "0" * 400])
def test_durations_over_ten_years_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="10 years"):
        parse_duration(text, option="--delay")
    with pytest.raises(ValueError, match="10 years"):
        parse_time(text, option="--since")


def test_ten_years_is_the_longest_duration() -> None:
    assert parse_duration("3653d") == MAX_DURATION_SECONDS
    assert parse_time("3653d", option="--since").year >= 2000


def test_check_helpers_refuse_out_of_range_values() -> None:
    assert check_int(5, "n", 0, 9) == 5
    for bad in (10, -1, 10**20, True, 1.5, "3"):
        with pytest.raises(ValueError, match="n must be"):
            check_int(bad, "n", 0, 9)
    assert check_seconds(1.5, "t") == 1.5
    for bad in (MAX_DURATION_SECONDS + 1, float("inf"), float("nan"), -1, 10**400):
        with pytest.raises(ValueError, match="t must be"):
            check_seconds(bad, "t")
    with pytest.raises(ValueError, match="limit"):
        check_page(10**20, 0)
    with pytest.raises(ValueError, match="offset"):
        check_page(1, 10**20)


def test_task_names_are_one_to_two_hundred_characters() -> None:
    assert Envelope(name="n" * NAME_MAX_LENGTH).name == "n" * NAME_MAX_LENGTH
    for bad in ("", "   ", "n" * (NAME_MAX_LENGTH + 1), "n" * 9000):
        with pytest.raises(InvalidEnvelope, match="name"):
            Envelope(name=bad)


def test_a_wire_envelope_with_a_long_name_is_invalid() -> None:
    # (adapters turn InvalidEnvelope on decode into an invalid-envelope dead letter)
    with pytest.raises(InvalidEnvelope, match="at most 200"):
        Envelope.from_json(json.dumps({"name": "n" * 9000}))


@pytest.mark.parametrize("field, value", [("max_retries", MAX_RETRIES + 1), ("attempt", MAX_ATTEMPT + 1),
                                          ("max_retries", 10**20), ("visibility_timeout", 1e12)])
def test_envelope_numbers_are_bounded(field: str, value: object) -> None:
    with pytest.raises(InvalidEnvelope, match=field):
        Envelope(name="t", **{field: value})


def test_delays_over_ten_years_are_refused_not_overflowed() -> None:
    with pytest.raises(ValueError, match="10 years"):
        delay_to_not_before(1e12)
    with pytest.raises(ValueError, match="10 years"):
        delay_to_not_before(timedelta(days=999_999_999))


def test_the_app_refuses_long_names_huge_retries_and_delays_before_connecting() -> None:
    app = Stem(broker="memory://bounds-unit", backend="memory://bounds-unit")
    with pytest.raises(ValueError, match="at most 200"):
        app.build_envelope("n" * 9000)
    with pytest.raises(ValueError, match="max_retries"):
        app.build_envelope("t", max_retries=10**20)
    with pytest.raises(ValueError, match="delay"):
        app.build_envelope("t", delay=1e12)
    with pytest.raises(ValueError, match="at most 200"):
        app.task(name="n" * 201)(lambda ctx: None)
    assert not app.connected


def test_envelope_size_is_checked_in_encoded_bytes() -> None:
    small = Envelope(name="t", args={"s": "é" * 400})  # 800 bytes of UTF-8 in 400 characters
    small.check_size(2048)
    with pytest.raises(EnvelopeTooLarge, match="STEM_MAX_ENVELOPE_BYTES"):
        Envelope(name="t", args={"s": "é" * 1000}).check_size(2048)
    assert isinstance(EnvelopeTooLarge("x"), ValueError)


def test_max_envelope_bytes_setting() -> None:
    assert max_envelope_bytes({}) == DEFAULT_MAX_ENVELOPE_BYTES == 1_048_576
    assert max_envelope_bytes({"STEM_MAX_ENVELOPE_BYTES": "4096"}) == 4096
    for bad in ("lots", "-1", "10", "1e6", "9" * 30):
        with pytest.raises(ConfigurationError, match="STEM_MAX_ENVELOPE_BYTES"):
            max_envelope_bytes({"STEM_MAX_ENVELOPE_BYTES": bad})


async def test_a_broker_refuses_to_publish_an_envelope_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from stem_core import connect_broker

    monkeypatch.setenv("STEM_MAX_ENVELOPE_BYTES", "4096")
    async with await connect_broker("memory://bounds-size", namespace="bounds") as broker:
        big = Envelope(name="t", queue="q", args={"blob": "x" * 5000})
        for publish in (broker.publish(big), broker.publish_many([big]), broker.broadcast("ch", big)):
            with pytest.raises(EnvelopeTooLarge):
                await publish
        assert (await broker.queue_stats(["q"]))[0].pending == 0


def test_a_task_name_with_nul_is_refused_on_every_broker() -> None:
    with pytest.raises(ValueError, match="NUL"):
        check_task_name("a\x00b")
    with pytest.raises(InvalidEnvelope, match="NUL"):
        Envelope(name="a\x00b")


def test_json_nested_too_deeply_is_an_invalid_envelope_not_a_recursion_error() -> None:
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    wire = '{"id": "x", "name": "t", "args": ' + deep + "}"
    with pytest.raises(InvalidEnvelope, match="nested too deeply"):
        Envelope.from_json(wire)
    nested: dict = {}
    cursor = nested
    for _ in range(100_000):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(InvalidEnvelope, match="nested too deeply"):
        Envelope(name="t", args=nested).to_json()


def test_the_audit_scrubber_still_finds_urls_after_runs_of_scheme_characters() -> None:
    from stem_core.ops.audit import scrub

    assert scrub("x" * 50 + " redis://u:pw@h/0") == "x" * 50 + " redis://u:***@h/0"
    assert scrub("(amqp://guest:pw@h/)") == "(amqp://guest:***@h/)"
