"""Redis connections: URL options, errors translated (and redacted) in one place, the
persistence warning, TLS (``rediss://``) against a private ``redis-server`` with a
throw-away certificate, and clients that recover when the server restarts.

``PrivateRedis`` (also used by ``test_redis_restart.py``) runs a server of our own on a
free port, so killing it never touches the shared server on 6379.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.adapters.redis import RedisBroker, connection, wire
from stem_core.errors import BackendUnavailable, BrokerUnavailable, ConfigurationError
from tests.specs import require_service, require_tool
from tests.specs.redis import REDIS_TEST_URL, delete_namespace
from tests.support import free_port

SERVER_START_DEADLINE_S = 15.0
PASSWORD = "s3cret-Pa55"



class PrivateRedis:
    """A ``redis-server`` of this test only: started, killed (-9) and restarted at will."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.binary = require_tool("redis-server")
        self.dir = directory
        self.port = free_port()
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                   "--save", "", "--logfile", str(self.log), *self.options]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_DEADLINE_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log.read_text()[-2000:] if self.log.exists() else ''}")
            try:
                if self.ping():
                    return
            except (redis.exceptions.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)

    def ping(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, **self.client_options())
        try:
            return bool(client.ping())
        except redis.exceptions.BusyLoadingError:
            return False
        finally:
            client.close()

    def client_options(self) -> dict[str, object]:
        return {}

    def kill(self) -> None:
        """SIGKILL: no shutdown save, the way a crash ends it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


# -- URLs and options ------------------------------------------------------------------


def test_unknown_options_and_bad_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown Redis option 'bogus'"):
        RedisBroker.from_url("redis://127.0.0.1:6379/9?bogus=1")
    with pytest.raises(ConfigurationError, match="unknown Redis option 'result_ttl'"):
        RedisBroker.from_url("redis://127.0.0.1:6379/9", result_ttl=5)
    with pytest.raises(ConfigurationError, match="database number"):
        RedisBroker.from_url("redis://127.0.0.1:6379/queues")
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        RedisBroker.from_url("redis://127.0.0.1:6379/9?lease_seconds=soon")
    with pytest.raises(ConfigurationError, match="socket_timeout must be positive"):
        RedisBroker.from_url("redis://127.0.0.1:6379/9?socket_timeout=0")


def test_tls_options_pass_through_and_passwords_never_show() -> None:
    broker = RedisBroker.from_url(
        f"rediss://stem:{PASSWORD}@cache.example:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem&lease_seconds=12"
    )
    config = broker._conn.config
    assert config.client["ssl_cert_reqs"] == "required" and config.client["ssl_ca_certs"] == "/etc/ca.pem"
    assert config.client["db"] == 2 and broker.lease_seconds == 12.0
    assert PASSWORD not in repr(broker) and PASSWORD not in config.shown_url and "***" in config.shown_url


async def test_an_unreachable_server_is_broker_unavailable_with_the_password_redacted() -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0?socket_connect_timeout=1&retry_attempts=0"
    with pytest.raises(BrokerUnavailable) as caught:
        await connect_broker(url)
    assert PASSWORD not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(BackendUnavailable):
        await connect_backend(url)


async def test_wrong_credentials_are_unavailable_not_a_driver_error(private_redis: PrivateRedis) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{private_redis.port}/0"
    with pytest.raises(BrokerUnavailable) as caught:
        await connect_broker(url)  # the server has no password: AUTH fails
    assert PASSWORD not in str(caught.value)


async def test_persistence_off_is_reported_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                namespace: str) -> None:
    require_service("redis")
    monkeypatch.setattr(connection, "_warned", set())
    caplog.set_level(logging.WARNING, logger="stem.redis")
    first = await connect_broker(REDIS_TEST_URL, namespace=namespace)
    second = await connect_broker(REDIS_TEST_URL, namespace=namespace)
    try:
        # The shared test server runs with --save "" --appendonly no
        warnings = [r for r in caplog.records if "persists nothing" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await first.close()
        await second.close()


async def test_an_evicting_policy_is_reported(private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    admin = redis.Redis(host="127.0.0.1", port=private_redis.port)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.close()
    monkeypatch.setattr(connection, "_warned", set())
    caplog.set_level(logging.WARNING, logger="stem.redis")
    broker = await connect_broker(private_redis.url)
    await broker.close()
    assert any("maxmemory-policy=allkeys-lru" in r.getMessage() for r in caplog.records)


# -- restarts --------------------------------------------------------------------------


async def test_producers_get_a_clear_error_and_clients_recover_after_a_restart(private_redis: PrivateRedis) -> None:
    broker = await connect_broker(private_redis.url + "?retry_attempts=1")
    backend = await connect_backend(private_redis.url + "?retry_attempts=1")
    try:
        await broker.publish(Envelope(name="before"))
        private_redis.kill()
        with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
            await broker.publish(Envelope(name="during"))
        with pytest.raises(BackendUnavailable):
            await backend.get_status("x")
        private_redis.start()
        # Then the same objects work again (no persistence here: the old message is gone)
        await broker.publish(Envelope(name="after"))
        await backend.set_status("x", "queued")
        assert (await backend.get_status("x")) is not None
        (stats,) = await broker.queue_stats(["default"])
        assert stats.pending == 1
    finally:
        await broker.close()
        await backend.close()


# -- TLS -------------------------------------------------------------------------------


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class TLSRedis(PrivateRedis):
    def __init__(self, directory: Path) -> None:
        self.cert, self.key = _make_certificate(directory)
        super().__init__(directory)
        self.options = ("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                        "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD)

    def start(self) -> None:
        command = [self.binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--dir",
                   str(self.dir), "--save", "", "--logfile", str(self.log), *self.options]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_ready()

    def client_options(self) -> dict[str, object]:
        return {"ssl": True, "ssl_ca_certs": str(self.cert), "password": PASSWORD}


async def test_rediss_with_a_private_ca_works_end_to_end(tmp_path: Path) -> None:
    server = TLSRedis(tmp_path)
    try:
        server.start()
        url = f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0?ssl_ca_certs={server.cert}"
        broker = await connect_broker(url, namespace="tls")
        backend = await connect_backend(url, namespace="tls")
        try:
            sent = Envelope(name="over-tls")
            await broker.publish(sent)
            async for delivery in broker.consume(["default"]):
                assert delivery.envelope.id == sent.id
                await broker.ack(delivery)
                break
            await backend.set_status(sent.id, "succeeded")
            assert (await backend.get_status(sent.id)).state.value == "succeeded"  # type: ignore[union-attr]
        finally:
            await broker.close()
            await backend.close()
        # Without the CA the certificate is refused: a clear error, no password in it
        with pytest.raises(BrokerUnavailable) as caught:
            await connect_broker(f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0?retry_attempts=0")
        assert PASSWORD not in str(caught.value)
    finally:
        server.kill()


async def test_cleanup_helper_only_touches_its_namespace(namespace: str) -> None:
    require_service("redis")
    client = redis.asyncio.Redis.from_url(REDIS_TEST_URL)
    try:
        await client.set(f"{namespace}:x", 1)
        await client.set(f"{namespace}x:other", 1)
        await delete_namespace(REDIS_TEST_URL, namespace)
        assert await client.exists(f"{namespace}:x") == 0 and await client.exists(f"{namespace}x:other") == 1
    finally:
        await client.delete(f"{namespace}x:other")
        await client.aclose()


class FreezingProxy:
    """A TCP proxy to the test server that can stop forwarding requests: the server then
    looks alive (connected) but never answers, the case only a read timeout catches."""

    def __init__(self) -> None:
        self.frozen = False
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> "FreezingProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        for pipe in (self._pump(reader, up_writer, requests=True), self._pump(up_reader, writer, requests=False)):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, requests: bool) -> None:
        try:
            while data := await reader.read(65536):
                if not (requests and self.frozen):
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_server_that_stops_answering_is_a_timeout_and_the_client_recovers(namespace: str) -> None:
    require_service("redis")
    proxy = await FreezingProxy().start()
    url = f"redis://127.0.0.1:{proxy.port}/9?socket_timeout=0.5&retry_attempts=0"
    broker = await connect_broker(url, namespace=namespace)
    backend = await connect_backend(url, namespace=namespace)
    try:
        await broker.publish(Envelope(name="t.before"))
        await backend.set_status("t1", "queued")
        # When the server stops answering, the per-message script calls time out
        proxy.frozen = True
        with pytest.raises(BrokerUnavailable, match="Timeout"):
            await broker.publish(Envelope(name="t.frozen"))
        with pytest.raises(BackendUnavailable, match="Timeout"):
            await backend.set_status("t1", "running")
        # Then, once it answers again, the same clients work on fresh connections
        proxy.frozen = False
        await broker.publish(Envelope(name="t.after"))
        status = await backend.set_status("t1", "running")
        assert status.state.value == "running"
        assert (await broker.queue_stats(["default"]))[0].pending >= 2
    finally:
        await broker.close()
        await backend.close()
        await proxy.stop()
        await delete_namespace(REDIS_TEST_URL, namespace)


async def test_connections_of_a_burst_go_back_to_the_pool(namespace: str) -> None:
    require_service("redis")
    limit = wire.KEPT_CONNECTIONS + 2
    broker = await connect_broker(f"{REDIS_TEST_URL}?max_connections={limit}", namespace=namespace)
    try:
        await broker.publish(Envelope(name="t.first"))  # the queue is known: publishing is one packed XADD
        # When as many publishes as the pool allows run at once (each on its own connection)
        await asyncio.gather(*[broker.publish(Envelope(name="t.burst")) for _ in range(limit)])
        # Then all but the kept ones are back in the pool, for its other users at once
        stats = await asyncio.gather(*[broker.queue_stats(["default"]) for _ in range(limit - wire.KEPT_CONNECTIONS)])
        assert [s.pending for (s,) in stats] == [limit + 1] * len(stats)
    finally:
        await broker.close()
        await delete_namespace(REDIS_TEST_URL, namespace)
