"""The chaos TCP proxy against a local echo server: piping, latency, stalls (both ways and
one way), dropped connections."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from tests.chaos.proxy import ChaosProxy
from tests.support import eventually

# A read that must NOT complete is given this long (an absence can only be waited for).
QUIET_S = 0.3


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo: int) -> AsyncIterator[ChaosProxy]:
    async with ChaosProxy("127.0.0.1", echo) as chaos:
        yield chaos


async def _connect(proxy: ChaosProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def test_bytes_pass_through_both_ways(proxy: ChaosProxy) -> None:
    reader, writer = await _connect(proxy)
    payload = bytes(range(256)) * 1000
    writer.write(payload)
    assert await reader.readexactly(len(payload)) == payload
    assert proxy.connections == 1
    await _close(writer)


async def test_latency_delays_and_heal_removes_it(proxy: ChaosProxy) -> None:
    reader, writer = await _connect(proxy)
    proxy.latency(0.2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert loop.time() - began >= 0.4  # held once each way
    proxy.heal()
    assert proxy.delay == 0.0
    await _close(writer)


@pytest.mark.parametrize("direction", ["both", "up", "down"])
async def test_a_stall_holds_bytes_until_heal_then_delivers_them_in_order(proxy: ChaosProxy, direction: str) -> None:
    reader, writer = await _connect(proxy)
    proxy.stall(direction)  # type: ignore[arg-type]
    writer.write(b"one-")
    writer.write(b"two")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(7), QUIET_S)
    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(7), 10) == b"one-two"
    await _close(writer)


async def test_a_one_way_partition_lets_the_other_direction_flow(echo: int) -> None:
    # Given a proxy to a server that greets on connect, partitioned client -> server
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        got = await reader.read(5)
        writer.write(b"got:" + got)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with ChaosProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as chaos:
        chaos.stall("up")
        reader, writer = await asyncio.open_connection("127.0.0.1", chaos.port)
        # Then the server's greeting arrives but our message does not reach it
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        writer.write(b"abcde")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(9), QUIET_S)
        chaos.heal()
        assert await asyncio.wait_for(reader.readexactly(9), 10) == b"got:abcde"
        await _close(writer)
    server.close()
    await server.wait_closed()


async def test_drop_resets_open_connections_and_new_ones_work(proxy: ChaosProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    proxy.drop()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 10)
    await eventually(lambda: proxy.open_connections == 0)
    await _close(writer)
    reader2, writer2 = await _connect(proxy)
    writer2.write(b"y")
    assert await reader2.readexactly(1) == b"y"
    await _close(writer2)


async def test_an_unreachable_upstream_closes_the_client() -> None:
    async with ChaosProxy("127.0.0.1", 1) as chaos:
        reader, writer = await asyncio.open_connection("127.0.0.1", chaos.port)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 10)
        await _close(writer)
