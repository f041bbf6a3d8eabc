"""SQS faults and bad input, against real servers: a port nobody listens on, a server
that stops answering (a proxy in front of moto that freezes), a server that refuses the
credentials (moto with authentication on), queues deleted behind the broker's back, and
the ``stem`` CLI on top: one-line errors, exit 2 for bad input, exit 3 for unreachable,
no traceback, no credential in any output, nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from stem_core import Envelope, connect_broker
from stem_core.adapters.sqs import SQSBroker
from stem_core.errors import BrokerUnavailable, ConfigurationError
from tests.contract.helpers import consuming, receive_one, stats_of
from tests.specs import AdapterSpec, require_service
from tests.specs.sqs import MOTO_REGION, SPEC, moto_endpoint, raw_clients, sqs_url
from tests.support import free_port

STEM = str(Path(sys.executable).parent / "stem")
ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3rSecretKey"
KEY_ID = "AKIAEXAMPLEKEY123456"
COMMAND_TIMEOUT_S = 120
DEADLINE_S = 20.0


@pytest.fixture
def broker_spec() -> AdapterSpec:
    require_service("moto")
    return SPEC



def _url(endpoint: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"region": MOTO_REGION, "endpoint": endpoint, **options}.items())
    return f"sqs://{KEY_ID}:{SECRET}@?{query}"


def _one_line_without_secrets(text: str) -> None:
    assert "\n" not in text.strip() and SECRET not in text and KEY_ID not in text, text


class FreezingProxy:
    """A TCP proxy in front of moto that can stop answering (connections accepted, no
    byte forwarded) and start again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for writer in self._held:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.frozen:
            self._held.add(writer)  # accepted, never answered
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[FreezingProxy, str]]:
    front = FreezingProxy(int(moto_endpoint().rpartition(":")[2]))
    port = await front.start()
    yield front, f"http://127.0.0.1:{port}"
    await front.stop()


@pytest.fixture(scope="module")
def strict_moto() -> Iterator[str]:
    """A second moto server that checks credentials (and knows none)."""
    require_service("moto")
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the strict moto server did not start", pytrace=False)
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


async def test_a_port_nobody_listens_on_is_unavailable(namespace: str) -> None:
    url = _url(f"http://127.0.0.1:{free_port()}", timeout="2", retries="1")
    with pytest.raises(BrokerUnavailable, match="cannot reach SQS") as caught:
        await connect_broker(url, namespace=namespace)
    _one_line_without_secrets(str(caught.value))


async def test_refused_credentials_are_unavailable_and_not_shown(strict_moto: str, namespace: str) -> None:
    with pytest.raises(BrokerUnavailable, match="refused the credentials") as caught:
        await connect_broker(_url(strict_moto, retries="1"), namespace=namespace)
    assert "InvalidClientTokenId" in str(caught.value) and "<" not in str(caught.value)
    _one_line_without_secrets(str(caught.value))


async def test_a_server_that_stops_answering_loses_nothing(proxy: tuple[FreezingProxy, str], namespace: str) -> None:
    # Given 20 tasks published through a proxy that then stops answering
    front, endpoint = proxy
    broker = await connect_broker(_url(endpoint, timeout="1", retries="1"), namespace=namespace)
    try:
        sent = [Envelope(name="t", queue="fz", args={"i": i}) for i in range(20)]
        await broker.publish_many(sent)
        front.frozen = True
        # When a publish and a consumer run into it, then each fails with one line
        with pytest.raises(BrokerUnavailable, match="did not answer") as caught:
            await broker.publish(Envelope(name="t", queue="fz"))
        _one_line_without_secrets(str(caught.value))
        stream = broker.consume("fz", prefetch=5)
        with pytest.raises(BrokerUnavailable):
            async with asyncio.timeout(DEADLINE_S):
                async for _ in stream:
                    pytest.fail("nothing can be delivered through a frozen server")
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        front.frozen = False
        await broker.close()
    # And once it answers again, every task is there, none taken by the failed calls
    async with await connect_broker(sqs_url(), namespace=namespace) as direct:
        got = set()
        async with consuming(direct, "fz", prefetch=20) as consumer:
            while len(got) < 20:
                delivery = await consumer.expect()
                got.add(delivery.envelope.id)
                await direct.ack(delivery)
        assert got == {e.id for e in sent}


async def test_queues_deleted_behind_the_brokers_back(broker: SQSBroker) -> None:
    # A queue that never existed reads as empty
    assert await broker.get_dead_letter("never", "x") is None
    assert (await broker.list_dead_letters("never")).entries == []
    stats = await stats_of(broker, "never")
    assert (stats.pending, stats.delayed, stats.inflight, stats.dead) == (0, 0, 0, 0)
    # A band queue deleted while the broker knows its URL is made again on the next publish
    await broker.publish(Envelope(name="t", queue="gone"))
    async with raw_clients() as (sqs, _):
        url = (await sqs.get_queue_url(QueueName=broker.names.queue("gone", "p0")))["QueueUrl"]
        await sqs.delete_queue(QueueUrl=url)
    sent = Envelope(name="t", queue="gone")
    await broker.publish(sent)
    delivery = await receive_one(broker, "gone")
    assert delivery is not None and delivery.envelope.id == sent.id
    await broker.ack(delivery)


def test_bad_urls_fail_before_any_request() -> None:
    for url in ("sqs://?region=nowhere", "sqs://?region=eu-west-1&wait_seconds=0"):
        with pytest.raises(ConfigurationError):
            SQSBroker.from_url(url)


# -- the CLI ------------------------------------------------------------------------


def _stem(*args: str, broker: str, backend: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEM_", "AWS_"))}
    env.update({"STEM_BROKER_URL": broker, "STEM_RESULT_BACKEND_URL": backend, "COLUMNS": "200",
                "PYTHONPATH": str(ROOT)})
    return subprocess.run([STEM, *args], input=input, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=COMMAND_TIMEOUT_S)


def _fails(result: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    err = result.stderr
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    _one_line_without_secrets(err + result.stdout)


def test_cli_exit_codes_and_redaction(tmp_path: Path, namespace: str) -> None:
    require_service("moto")
    backend = f"sqlite://{tmp_path / 'results.db'}"
    live = _url(moto_endpoint()) + f"&prefix={namespace}-"
    down = _url(f"http://127.0.0.1:{free_port()}", timeout="2", retries="1")
    # Unreachable: exit 3
    _fails(_stem("inspect", "queues", broker=down, backend=backend), 3, "cannot reach SQS")
    # Over 1 MiB: exit 2, nothing sent
    line = json.dumps({"task": "big", "args": {"x": "a" * 1_100_000}})
    _fails(_stem("enqueue", "--file", "-", broker=live, backend=backend, input=line + "\n"), 2, "more than the 1048576 allowed")
    # Round trip; the counts are marked approximate
    task = _stem("enqueue", "mail.send", "-q", "emails", broker=live, backend=backend)
    assert task.returncode == 0, task.stderr
    shown = _stem("inspect", "queues", "--json", broker=live, backend=backend)
    assert shown.returncode == 0, shown.stderr
    [row] = [q for q in json.loads(shown.stdout)["queues"] if q["queue"] == "emails"]
    assert row["pending"] == 1 and row["approximate"] is True
    assert "~1" in _stem("inspect", "queues", broker=live, backend=backend).stdout
    # What SQS cannot do is said in one line
    _fails(_stem("inspect", "queue", "emails", broker=live, backend=backend), 1, "cannot peek")
    # The configuration shows no credential
    config = _stem("config", broker=live, backend=backend)
    assert config.returncode == 0 and "sqs://***:***@" in config.stdout
    _one_line_without_secrets(config.stdout.replace("\n", " "))
