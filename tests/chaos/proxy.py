"""A fault-injecting TCP proxy on asyncio streams, between one worker and the broker.

``ChaosProxy(upstream_host, upstream_port)`` listens on 127.0.0.1 (a free port) and pipes
every accepted connection to the upstream. Faults, applied to current and new
connections until changed:

* ``latency(seconds)``: every chunk is held this long before it is forwarded.
* ``stall(direction)``: bytes in ``"up"`` (client -> server), ``"down"`` or ``"both"``
  directions are held, not forwarded, until ``heal()`` (TCP keeps them, as a real
  partition's retransmissions would); ``stall("up")`` alone is a one-way partition.
* ``drop()``: every open connection is aborted (RST) at once; new ones are accepted.
* ``heal()``: no latency, nothing held; held bytes flow again in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal

Direction = Literal["up", "down", "both"]
CHUNK = 65536


class ChaosProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.delay = 0.0
        self.connections = 0  # accepted so far
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        for event in self._flowing.values():
            event.set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> "ChaosProxy":
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop()
            for event in self._flowing.values():
                event.set()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "ChaosProxy":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- faults ---------------------------------------------------------------------

    def latency(self, seconds: float) -> None:
        self.delay = max(0.0, float(seconds))

    def stall(self, direction: Direction = "both") -> None:
        for name in (("up", "down") if direction == "both" else (direction,)):
            self._flowing[name].clear()

    def drop(self) -> None:
        for client, upstream in list(self._open):
            for writer in (client, upstream):
                _abort(writer)
        self._open.clear()

    def heal(self) -> None:
        self.delay = 0.0
        for event in self._flowing.values():
            event.set()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- piping ---------------------------------------------------------------------

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(client_writer)
            return
        pair = (client_writer, up_writer)
        self._open.add(pair)
        pipes = [asyncio.ensure_future(self._pipe(client_reader, up_writer, "up")),
                 asyncio.ensure_future(self._pipe(up_reader, client_writer, "down"))]
        for task in pipes:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            self._open.discard(pair)
            for writer in pair:
                writer.close()
            for writer in pair:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        flowing = self._flowing[direction]
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                await flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer.can_write_eof() and not writer.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a dropped connection looks to both ends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    transport = writer.transport
    transport.abort()
