"""The packed wire path: Stem's per-message commands as bytes, on kept connections.

Cost matters here (SPEC §11 measures Stem against one raw ``XADD`` per call). The
per-message commands (script calls, the bare ``XADD`` of a publish, the idle
consumer's ``XREAD BLOCK``) skip redis-py's command layer: their key lists are packed
into the wire format once (``resp``, kept by ``keys.QueueKeys``) and the command is
sent on a connection ``RedisWire`` keeps checked out of the pool, because redis-py's
per-command pool lock, socket probe and argument encoding cost more than the round
trip on a busy host. Connection errors are retried with the pool's policy, and the
caller (``RedisConnection``) maps every redis-py error, as for any other command.
The exchange itself, which needs redis-py's internals, is ``internals.exchange``.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool

from .internals import exchange

# Connections a wire keeps checked out for its packed commands; more are taken from the
# pool during a burst of concurrent calls and given back after.
KEPT_CONNECTIONS = 8


def resp(*values: bytes | str | int) -> bytes:
    """``values`` in the Redis wire format (RESP bulk strings, no array header): pack a
    fixed run of keys once, then send it with every call (``RedisConnection.evalsha``)."""
    out = []
    for value in values:
        kind = value.__class__
        if kind is str:
            value = value.encode()  # type: ignore[union-attr]
        elif kind is float:
            value = repr(value).encode()
        elif kind is not bytes:
            value = b"%d" % value
        out += (b"$", str(len(value)).encode(), b"\r\n", value, b"\r\n")  # type: ignore[arg-type]
    return b"".join(out)


class RedisWire:
    """Packed commands sent on connections kept out of one pool (one wire per open
    client, so a call still running when the client closes never hands a connection to
    the next client's pool)."""

    __slots__ = ("_pool", "_idle")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[Any] = []

    async def send(self, command: bytes) -> Any:
        """Send one packed command and read its reply (connection errors retried)."""
        idle = self._idle
        conn = idle.pop() if idle else await self._pool.get_connection()
        try:
            return await conn.retry.call_with_retry(lambda: exchange(conn, command), lambda _: conn.disconnect())
        finally:
            if len(idle) < KEPT_CONNECTIONS:
                idle.append(conn)
            else:  # after a burst of concurrent calls: the pool's other users need them
                await self._pool.release(conn)


__all__ = ["KEPT_CONNECTIONS", "RedisWire", "resp"]
