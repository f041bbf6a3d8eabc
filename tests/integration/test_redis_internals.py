"""The redis-py internals ``stem_core/adapters/redis/internals.py`` relies on, checked on the
installed redis-py: the private attributes and methods exist with the shape it uses, and
its functions work against the real server (database 9). A redis-py upgrade that changes
any of them fails here, by name, before it breaks a broker in a subtle way.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import AsyncIterator

import pytest
from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, parse_url

from stem_core.adapters.redis.connection import RedisConnection
from stem_core.adapters.redis.internals import StemConnection, StemSSLConnection, connection_class, exchange
from stem_core.adapters.redis.url import parse_url as stem_parse_url
from stem_core.adapters.redis.wire import RedisWire, resp
from tests.integration.test_redis_connection import FreezingProxy
from tests.specs import require_service
from tests.specs.redis import REDIS_TEST_URL

HOST, PORT, DB = "127.0.0.1", 6379, 9
# Large enough that the kernel's socket buffer cannot take it at once: the write must wait.
BIG_VALUE_BYTES = 8 * 1024 * 1024
# Replies of the frozen proxy never come: a short timeout ends the read.
FROZEN_TIMEOUT_S = 0.3


def command(*parts: bytes | str | int) -> bytes:
    """One packed command, as Stem's wire path sends it."""
    return b"*%d\r\n%s" % (len(parts), resp(*parts))


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


@pytest.fixture
async def conn() -> AsyncIterator[StemConnection]:
    require_service("redis")
    connection = StemConnection(host=HOST, port=PORT, db=DB, protocol=2, socket_timeout=5.0, health_check_interval=30)
    await connection.connect()
    yield connection
    await connection.disconnect()


# -- the shape of what is used ---------------------------------------------------------


def test_the_overridden_send_packed_command_keeps_its_signature() -> None:
    # StemConnection replaces it: a new parameter redis-py passes would be dropped
    signature = inspect.signature(Connection.send_packed_command)
    assert list(signature.parameters) == ["self", "command", "check_health"]
    assert signature.parameters["check_health"].default is True


def test_the_connection_methods_used_take_the_arguments_passed() -> None:
    assert "check_health" in parameters(Connection.connect_check_health)
    assert "nowait" in parameters(Connection.disconnect)
    assert parameters(Connection._host_error) == ["self"]
    assert parameters(Connection.check_health) == ["self"]


def test_the_health_check_clock_is_the_one_redis_py_reads() -> None:
    # exchange moves next_health_check after a read, as redis-py's own read does; the
    # health check must still decide by it, or connections would be probed every command
    assert "next_health_check" in inspect.getsource(Connection.read_response)
    assert "next_health_check" in inspect.getsource(Connection.check_health)


def test_rediss_urls_name_the_ssl_connection_class() -> None:
    assert parse_url("rediss://cache.example:6380/0")["connection_class"] is SSLConnection
    assert connection_class(parse_url("rediss://cache.example:6380/0")["connection_class"]) is StemSSLConnection
    assert connection_class(parse_url("redis://cache.example/0").get("connection_class")) is StemConnection
    assert StemSSLConnection.__mro__.index(SSLConnection) > StemSSLConnection.__mro__.index(StemSSLConnection)


async def test_a_connected_connection_has_the_parser_and_writer_used(conn: StemConnection) -> None:
    parser = conn._parser
    assert "disable_decoding" in parameters(parser.read_response)
    writer = conn._writer
    assert isinstance(writer, asyncio.StreamWriter)
    assert isinstance(writer.transport.get_write_buffer_size(), int) and callable(writer.transport.abort)
    assert isinstance(conn.next_health_check, float) and conn.health_check_interval == 30
    assert f"{HOST}:{PORT}" in conn._host_error()


# -- the fenced functions against the real server --------------------------------------


async def test_exchange_returns_the_reply_and_keeps_the_health_clock(conn: StemConnection) -> None:
    before = conn.next_health_check
    assert await exchange(conn, command("PING")) == b"PONG"
    assert conn.next_health_check > before
    assert await exchange(conn, command("ECHO", "stem")) == b"stem"


async def test_an_error_reply_is_raised_and_the_connection_stays_usable(conn: StemConnection) -> None:
    with pytest.raises(rex.ResponseError, match="unknown command"):
        await exchange(conn, command("NOSUCHCOMMAND"))
    assert conn.is_connected
    assert await exchange(conn, command("PING")) == b"PONG"


async def test_a_write_larger_than_the_socket_buffer_waits_and_arrives(conn: StemConnection) -> None:
    key = f"stem-internals:{uuid.uuid4().hex}"
    try:
        assert await exchange(conn, command("SET", key, b"x" * BIG_VALUE_BYTES)) == b"OK"
        assert await exchange(conn, command("STRLEN", key)) == BIG_VALUE_BYTES
    finally:
        await exchange(conn, command("DEL", key))


async def test_a_disconnected_connection_connects_again_on_the_next_send(conn: StemConnection) -> None:
    await conn.disconnect()
    assert not conn.is_connected
    assert await exchange(conn, command("PING")) == b"PONG"


async def test_a_connection_killed_by_the_server_is_a_connection_error_and_disconnected(conn: StemConnection) -> None:
    own_id = await exchange(conn, command("CLIENT", "ID"))
    admin = Redis.from_url(REDIS_TEST_URL)
    try:
        assert await admin.client_kill_filter(_id=own_id) == 1
    finally:
        await admin.aclose()
    with pytest.raises(rex.ConnectionError):
        await exchange(conn, command("PING"))
    assert not conn.is_connected


async def test_a_reply_that_never_comes_is_a_timeout_and_disconnects() -> None:
    require_service("redis")
    proxy = await FreezingProxy().start()
    conn = StemConnection(host=HOST, port=proxy.port, db=DB, protocol=2, socket_timeout=FROZEN_TIMEOUT_S)
    try:
        assert await exchange(conn, command("PING")) == b"PONG"
        proxy.frozen = True
        with pytest.raises(rex.TimeoutError, match="Timeout reading from"):
            await exchange(conn, command("PING"))
        assert not conn.is_connected
    finally:
        await conn.disconnect()
        await proxy.stop()


async def test_the_wire_and_the_pool_use_the_fenced_connection() -> None:
    require_service("redis")
    # A RedisConnection's pool makes StemConnections, and its wire sends through exchange
    config = stem_parse_url(REDIS_TEST_URL, {}, {})
    opened = RedisConnection(config, role="broker")
    client = await opened.open()
    try:
        assert client.connection_pool.connection_class is StemConnection
        assert await opened.command(command("PING")) == b"PONG"
    finally:
        await opened.close()
    pool = ConnectionPool(connection_class=StemConnection, host=HOST, port=PORT, db=DB, protocol=2)
    try:
        assert await RedisWire(pool).send(command("ECHO", "wire")) == b"wire"
    finally:
        await pool.disconnect()
