"""The wire format of SPEC §3, byte for byte."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from stem_core import Envelope, InvalidEnvelope
from stem_core.envelope import JSON_KEYS, uuid7, validate_name
from stem_core.errors import InvalidName


def test_to_json_writes_exactly_the_twelve_keys() -> None:
    env = Envelope(name="email.send", args={"to": "a@b.c"})
    data = json.loads(env.to_json())
    assert list(data) == list(JSON_KEYS)
    assert len(data) == 12
    assert data["notBefore"] is None and data["visibilityTimeout"] is None
    assert data["queue"] == "default" and data["priority"] == 0 and data["attempt"] == 0 and data["maxRetries"] == 0


def test_round_trip_keeps_every_field() -> None:
    env = Envelope(
        name="t",
        args={"n": 1, "nested": {"a": [1, 2]}},
        headers={"h": "v"},
        not_before=datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
        priority=9,
        attempt=2,
        max_retries=5,
        visibility_timeout=1.5,
        queue="emails",
        meta={"m": True},
    )
    again = Envelope.from_json(env.to_json())
    assert again == env


def test_visibility_timeout_is_integer_milliseconds_on_the_wire() -> None:
    env = Envelope(name="t", visibility_timeout=2.25)
    assert json.loads(env.to_json())["visibilityTimeout"] == 2250
    assert Envelope.from_json('{"name": "t", "visibilityTimeout": 1500}').visibility_timeout == 1.5


def test_times_are_iso_with_z() -> None:
    env = Envelope(name="t", enqueued_at=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc))
    assert json.loads(env.to_json())["enqueuedAt"] == "2025-01-02T03:04:05.678Z"
    env = Envelope(name="t", enqueued_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc))
    assert json.loads(env.to_json())["enqueuedAt"] == "2025-01-02T03:04:05.678901Z"


def test_from_json_fills_defaults_for_missing_keys() -> None:
    env = Envelope.from_json(b'{"name": "only.name"}')
    assert env.args == {} and env.queue == "default" and env.priority == 0
    assert uuid.UUID(env.id).version == 7
    assert env.enqueued_at.tzinfo is not None


def test_dart_written_envelope_decodes() -> None:
    text = (
        '{"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","name":"greet","args":{"name":"x"},"headers":{},'
        '"enqueuedAt":"2025-01-02T03:04:05.678123456Z","notBefore":null,"priority":3,"attempt":1,'
        '"maxRetries":2,"visibilityTimeout":30000,"queue":"default","meta":{}}'
    )
    env = Envelope.from_json(text)
    assert env.enqueued_at == datetime(2025, 1, 2, 3, 4, 5, 678123, tzinfo=timezone.utc)
    assert env.visibility_timeout == 30.0 and env.priority == 3 and env.attempt == 1


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"args": {}}', "no 'name'"),
        ('{"name": ""}', "name"),
        ('{"name": "t", "priority": 10}', "priority"),
        ('{"name": "t", "priority": -1}', "priority"),
        ('{"name": "t", "priority": "high"}', "priority"),
        ('{"name": "t", "priority": true}', "priority"),
        ('{"name": "t", "attempt": -1}', "attempt"),
        ('{"name": "t", "args": [1]}', "args"),
        ('{"name": "t", "headers": {"a": 1}}', "header"),
        ('{"name": "t", "enqueuedAt": "yesterday"}', "enqueuedAt"),
        ('{"name": "t", "visibilityTimeout": "1s"}', "visibilityTimeout"),
        ('{"name": "t", "queue": "bad queue"}', "queue"),
    ],
)
def test_from_json_rejects_malformed_input(text: str, fragment: str) -> None:
    with pytest.raises(InvalidEnvelope, match=fragment):
        Envelope.from_json(text)


def test_invalid_envelope_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Envelope(name="t", priority=12)


def test_args_that_are_not_json_fail_on_encode() -> None:
    env = Envelope(name="t", args={"when": datetime.now()})
    with pytest.raises(InvalidEnvelope, match="JSON"):
        env.to_json()


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(InvalidEnvelope, match="timezone"):
        Envelope(name="t", not_before=datetime(2030, 1, 1))


def test_replace_validates() -> None:
    env = Envelope(name="t")
    assert env.replace(priority=5).priority == 5
    with pytest.raises(InvalidEnvelope):
        env.replace(priority=99)


def test_uuid7_is_time_ordered_and_version_7() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:10])


@pytest.mark.parametrize("name", ["default", "a", "emails.high", "q-1:2_x", "x" * 200])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 201, "has space", "semi;colon", "{brace}", "new\nline", "esc\x1b[31m", "ünï", "a/b", "*", None, 5]
)
def test_invalid_names_are_rejected_with_value_error(name: object) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(name)
    assert isinstance(info.value, ValueError)
    assert "letters, digits" in str(info.value)


def test_is_due() -> None:
    assert Envelope(name="t").is_due()
    future = Envelope(name="t", not_before=datetime.now(timezone.utc) + timedelta(hours=1))
    assert not future.is_due()


def test_ready_at_is_the_later_of_enqueued_at_and_not_before() -> None:
    enqueued = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert Envelope(name="t", enqueued_at=enqueued).ready_at == enqueued
    earlier = Envelope(name="t", enqueued_at=enqueued, not_before=enqueued - timedelta(seconds=5))
    assert earlier.ready_at == enqueued
    later = Envelope(name="t", enqueued_at=enqueued, not_before=enqueued + timedelta(seconds=5))
    assert later.ready_at == enqueued + timedelta(seconds=5)
