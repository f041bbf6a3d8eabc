"""RabbitMQ URL parsing: where the management API is looked for (AMQP cannot list queues,
so a fresh process — the CLI, the TUI — needs it to show any queue)."""

from __future__ import annotations

import pytest

from stem_core.adapters.rabbitmq.url import ENV_MANAGEMENT_URL, parse_url


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MANAGEMENT_URL, raising=False)


def test_by_default_the_plugin_s_standard_listener_on_the_broker_host() -> None:
    assert parse_url("amqp://u:p@rabbit.example:5672/v", {}).management_url == "http://rabbit.example:15672/"
    assert parse_url("amqps://u:p@rabbit.example/v", {}).management_url == "https://rabbit.example:15671/"
    assert parse_url("amqp://[::1]:5672/", {}).management_url == "http://[::1]:15672/"
    # Used to list queues only: in-flight counts from it only when configured
    assert not parse_url("amqp://h/", {}).management_counts
    assert parse_url("amqp://h/", {"management_url": "http://m/"}).management_counts


def test_an_explicit_url_or_the_environment_wins_and_empty_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_url("amqp://h/", {"management_url": "http://m:1/"}).management_url == "http://m:1/"
    assert parse_url("amqp://h/", {"management_url": None}).management_url is None
    assert parse_url("amqp://h/?management_url=", {}).management_url is None
    monkeypatch.setenv(ENV_MANAGEMENT_URL, "")
    assert parse_url("amqp://h/", {}).management_url is None
    monkeypatch.setenv(ENV_MANAGEMENT_URL, "https://m/")
    assert parse_url("amqp://h/", {}).management_url == "https://m/"
