"""Bad input on ``amqp://``: URLs and options, credentials, vhosts, oversized messages.

Each is one clear error from Stem's tree (never an aio-pika or aiormq exception), and the
CLI prints it as one line with exit 2 (bad input) or 3 (cannot reach the broker).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import aiormq
import pytest

from stem_core import Broker, Envelope, connect_broker
from stem_core.adapters.rabbitmq import RabbitMQBroker
from stem_core.adapters.rabbitmq.names import RabbitMQNames
from stem_core.errors import BrokerUnavailable, ConfigurationError, InvalidEnvelope, InvalidName
from tests.specs import require_service
from tests.specs.rabbitmq import RABBITMQ_TEST_URL, delete_namespace

ROOT = Path(__file__).resolve().parents[2]
STEM = str(Path(sys.executable).parent / "stem")
COMMAND_TIMEOUT_S = 60


@pytest.fixture
async def broker(namespace: str) -> AsyncIterator[Broker]:
    require_service("rabbitmq")
    opened = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace)
    yield opened
    await opened.close()
    await delete_namespace(RABBITMQ_TEST_URL, namespace)


def test_the_url_gives_vhost_options_and_a_redacted_form() -> None:
    broker = RabbitMQBroker.from_url("amqps://ann:s3cret@mq.example:5671/prod%2Feu?lease_seconds=5&heartbeat=30"
                                     "&cafile=/etc/ca.pem", publish_timeout=2)
    config = broker.config
    assert (config.vhost, config.user, config.heartbeat_s, config.publish_timeout_s) == ("prod/eu", "ann", 30, 2.0)
    assert broker.lease_seconds == 5.0
    assert "s3cret" not in config.shown_url and config.redact("boom s3cret") == "boom ***"
    assert "cafile=" in config.url and "lease_seconds" not in config.url
    assert RabbitMQBroker.from_url("amqp://h").config.vhost == "/"


@pytest.mark.parametrize(
    "url, options, match",
    [
        ("amqp://h/?bogus=1", {}, "unknown RabbitMQ option 'bogus'"),
        ("amqp://h/", {"prefetch": 3}, "unknown RabbitMQ option 'prefetch'"),
        ("amqp://h/?lease_seconds=soon", {}, "lease_seconds"),
        ("amqp://h/", {"publish_timeout": -1}, "publish_timeout"),
        ("amqp://h/", {"heartbeat": True}, "heartbeat"),
        ("amqp:///", {}, "names no host"),
        ("amqp://h/a/b", {}, "one vhost"),
        ("amqp://h/", {"management_url": "ftp://h"}, "http"),
    ],
)
def test_bad_urls_and_options_are_configuration_errors(url: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RabbitMQBroker.from_url(url, **options)


async def test_wrong_credentials_are_one_clear_error() -> None:
    require_service("rabbitmq")
    with pytest.raises(BrokerUnavailable, match="refused the credentials of user 'guest'") as caught:
        await connect_broker("amqp://guest:wrong-password@127.0.0.1:5672/")
    assert "wrong-password" not in str(caught.value) and "\n" not in str(caught.value)


async def test_a_vhost_that_does_not_exist_is_one_clear_error() -> None:
    require_service("rabbitmq")
    with pytest.raises(BrokerUnavailable, match="vhost 'no-such-vhost' does not exist"):
        await connect_broker("amqp://guest:guest@127.0.0.1:5672/no-such-vhost")


async def test_a_server_that_is_not_there_is_broker_unavailable() -> None:
    with pytest.raises(BrokerUnavailable, match="cannot reach RabbitMQ"):
        await connect_broker("amqp://guest:guest@127.0.0.1:1/?connect_timeout=2")


async def test_an_oversized_message_is_refused_before_it_is_sent(namespace: str) -> None:
    require_service("rabbitmq")
    broker = await connect_broker(RABBITMQ_TEST_URL, namespace=namespace, max_message_bytes=1000)
    try:
        with pytest.raises(InvalidEnvelope, match="takes at most 1000"):
            await broker.publish(Envelope(name="big", args={"blob": "x" * 2000}))
        # The connection is still good for a message that fits
        await broker.publish(Envelope(name="small", queue="fits"))
        assert (await broker.queue_stats(["fits"]))[0].pending == 1
    finally:
        await broker.close()
        await delete_namespace(RABBITMQ_TEST_URL, namespace)


async def test_invalid_names_never_reach_the_server(broker: Broker) -> None:
    for bad in ("", "a b", "x" * 201):
        with pytest.raises(InvalidName):
            await broker.publish(Envelope(name="t"), queue=bad)
    # A Stem name that starts like AMQP's reserved "amq." is fine: its AMQP name starts with "stem."
    await broker.publish(Envelope(name="t"), queue="amq.gen")
    assert (await broker.queue_stats(["amq.gen"]))[0].pending == 1


def _stem(*args: str, broker_url: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEM_")}
    env.update({"STEM_BROKER_URL": broker_url, "STEM_RESULT_BACKEND_URL": "redis://127.0.0.1:6379/9", "COLUMNS": "200"})
    return subprocess.run([STEM, *args], capture_output=True, env=env, cwd=ROOT, timeout=COMMAND_TIMEOUT_S)


def _one_line(result: subprocess.CompletedProcess[bytes], code: int, needle: str) -> None:
    err = result.stderr.decode(errors="replace")
    assert result.returncode == code, (code, result.returncode, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err and "Traceback" not in err, err


@pytest.mark.slow
def test_the_cli_reports_bad_input_in_one_line(namespace: str) -> None:
    require_service("rabbitmq")
    require_service("redis")
    _one_line(_stem("inspect", "queues", broker_url="amqp://guest:nope@127.0.0.1:5672/"), 3, "refused the credentials")
    _one_line(_stem("inspect", "queues", broker_url="amqp://guest:guest@127.0.0.1:5672/no-such-vhost"), 3,
              "vhost 'no-such-vhost' does not exist")
    _one_line(_stem("inspect", "queues", broker_url="amqp://guest:guest@127.0.0.1:5672/?bogus=1"), 2,
              "unknown RabbitMQ option 'bogus'")
    url = f"{RABBITMQ_TEST_URL}?max_message_bytes=500"
    _one_line(_stem("enqueue", "big", "--args", '{"x": "' + "y" * 1000 + '"}', "--namespace", namespace, broker_url=url),
              2, "takes at most 500")
    _one_line(_stem("enqueue", "t", "-q", "bad queue", "--namespace", namespace, broker_url=url), 2, "invalid queue name")


async def test_a_queue_declared_otherwise_by_someone_else_is_a_clear_error(broker: Broker, namespace: str) -> None:
    # Given the AMQP queue Stem would use, declared by another program without priorities
    connection = await aiormq.connect(RABBITMQ_TEST_URL)
    try:
        channel = await connection.channel()
        await channel.queue_declare(RabbitMQNames(namespace).work("clash"), durable=True)
    finally:
        await connection.close()
    # Then publishing there is one clear error, and the broker goes on working
    with pytest.raises(ConfigurationError, match="declared with other arguments") as caught:
        await broker.publish(Envelope(name="t", queue="clash"))
    assert "\n" not in str(caught.value)
    await broker.publish(Envelope(name="t", queue="fine"))
    assert (await broker.queue_stats(["fine"]))[0].pending == 1
