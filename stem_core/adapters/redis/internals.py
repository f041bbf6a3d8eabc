"""The one module that touches redis-py's private internals (``tests/integration/
test_redis_internals.py`` fails when an upgrade changes any of them).

Why they are touched at all: cost (SPEC §11 measures Stem against one raw ``XADD`` per
call). redis-py wraps every socket write in ``asyncio.wait_for`` (a task per command on
Python 3.11, ~15 us on this machine), and its ``read_response`` arms an
``asyncio.timeout`` per reply; on Stem's per-message paths each costs more than the
round trip. So:

* ``StemConnection`` / ``StemSSLConnection`` replace ``send_packed_command``: a write of
  a small command into a socket whose kernel buffer has room cannot block, so the
  timeout is armed only when data is left unsent (``_writer``; connecting goes through
  ``connect_check_health`` as redis-py's own method does);
* ``exchange`` sends a packed command and reads its reply from the connection's parser
  (``_parser.read_response``), a plain timer aborting the socket when the reply is late,
  and keeps redis-py's health-check clock (``next_health_check``) as its read would;
  errors name the server the way redis-py's do (``_host_error``).

What is used, and nowhere else: ``Connection._parser``, ``Connection._writer``,
``Connection._host_error``, ``Connection.connect_check_health``,
``Connection.next_health_check``, the ``send_packed_command(command, check_health)``
signature being overridden, and ``parse_url`` naming ``SSLConnection`` for ``rediss://``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as rex
from redis.asyncio.connection import Connection, SSLConnection


class _QuickWrite:
    """``send_packed_command`` without a per-command ``asyncio.wait_for``; the timeout
    still bounds a write that has to wait for the socket."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        conn: Any = self
        if not conn.is_connected:
            await conn.connect_check_health(check_health=False)
        if check_health:
            await conn.check_health()
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer = conn._writer
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                await asyncio.wait_for(writer.drain(), conn.socket_timeout)
        except asyncio.TimeoutError:
            await conn.disconnect(nowait=True)
            raise rex.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise rex.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # Part of a command may be on the wire: the connection cannot be reused.
            await conn.disconnect(nowait=True)
            raise


class StemConnection(_QuickWrite, Connection):
    pass


class StemSSLConnection(_QuickWrite, SSLConnection):
    pass


def connection_class(parsed: type | None) -> type[Connection]:
    """Stem's class for the one ``parse_url`` chose (``SSLConnection`` for ``rediss://``)."""
    return StemSSLConnection if parsed is SSLConnection else StemConnection


async def exchange(conn: Any, command: bytes) -> Any:
    """Send ``command`` and read its reply (RESP2), bounded by the socket timeout.

    A late reply aborts the socket, which ends the read, and the error says it timed
    out. As in redis-py, any failure while reading leaves the connection disconnected,
    never half-read.
    """
    await conn.send_packed_command(command)
    loop = asyncio.get_running_loop()
    late: list[bool] = []
    timer = loop.call_later(conn.socket_timeout, _abort, conn, late)
    try:
        response = await conn._parser.read_response(disable_decoding=False)
    except BaseException as exc:
        await conn.disconnect(nowait=True)
        if late:
            raise rex.TimeoutError(f"Timeout reading from {conn._host_error()}") from None
        if isinstance(exc, OSError):
            raise rex.ConnectionError(f"Error while reading from {conn._host_error()}: {exc}") from exc
        raise
    finally:
        timer.cancel()
    if conn.health_check_interval:
        conn.next_health_check = loop.time() + conn.health_check_interval
    if isinstance(response, rex.ResponseError):
        raise response from None
    return response


def _abort(conn: Any, late: list[bool]) -> None:
    late.append(True)
    writer = conn._writer
    if writer is not None:
        writer.transport.abort()


__all__ = ["StemConnection", "StemSSLConnection", "connection_class", "exchange"]
