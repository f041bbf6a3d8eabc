"""Status watches across processes: one pub/sub connection per backend, many watchers.

``results_set.lua`` publishes ``<version>\\n<created_at>\\n<status JSON>`` on the task's
channel in the same atomic step as the write, with a namespace-wide version, so a
watcher can order and de-duplicate what it sees. A watch subscribes first (and waits for
the server's confirmation), then reads the current status: no update can fall between
the two. When the pub/sub connection breaks (redis-py reconnects and subscribes again by
itself), every watcher re-reads the current status once the subscription is confirmed
again: messages sent meanwhile are lost with the connection, the re-read catches the
latest state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis import exceptions as rex

if TYPE_CHECKING:
    from .connection import RedisConnection

log = logging.getLogger("stem.redis")

# The reader wakes at least this often (to notice closing and reconnect).
READ_TIMEOUT_S = 1.0
# After losing the connection the hub tries again after this long.
RECONNECT_WAIT_S = 0.5
# Waiting for a SUBSCRIBE confirmation longer than this means the server is unreachable.
SUBSCRIBE_TIMEOUT_S = 5.0

RESYNC = object()  # a watcher re-reads the current status
CLOSED = object()  # the backend closed


class RedisWatchHub:
    """Fans messages of one ``PubSub`` connection out to per-watch queues."""

    def __init__(self, conn: "RedisConnection") -> None:
        self._conn = conn
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._watchers: dict[bytes, set[asyncio.Queue[Any]]] = {}
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._closed = False
        # Set while something is subscribed: the reader idles on it instead of polling.
        self._active = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    async def subscribe(self, channel: str) -> asyncio.Queue[Any]:
        """A queue that receives every later message of ``channel`` (confirmed subscribed)."""
        name = channel.encode()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        group = self._watchers.setdefault(name, set())
        group.add(queue)
        if len(group) > 1 and name not in self._confirm:
            return queue
        waiter = self._confirm.get(name)
        if waiter is None:
            waiter = self._confirm[name] = asyncio.get_running_loop().create_future()
            try:
                with self._conn.guard:
                    pubsub = self._ensure()
                    await pubsub.subscribe(name)
                self._active.set()
            except BaseException:
                self._confirm.pop(name, None)
                self._discard(name, queue)
                raise
        try:
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._discard(name, queue)
            raise self._conn.unavailable(f"no pub/sub confirmation from Redis at {self._conn.shown_url}") from None
        return queue

    async def unsubscribe(self, channel: str, queue: "asyncio.Queue[Any]") -> None:
        name = channel.encode()
        if self._discard(name, queue) and self._pubsub is not None and not self._closed:
            try:
                await self._pubsub.unsubscribe(name)
            except (rex.RedisError, OSError):
                pass  # the connection is gone: nothing left subscribed

    def _discard(self, name: bytes, queue: "asyncio.Queue[Any]") -> bool:
        """Forget ``queue``; True when nobody watches ``name`` any more."""
        group = self._watchers.get(name)
        if group is None:
            return False
        group.discard(queue)
        if group:
            return False
        del self._watchers[name]
        self._confirm.pop(name, None)
        return True

    def _ensure(self) -> Any:
        if self._closed:
            raise self._conn.unavailable(f"the Redis result backend for {self._conn.shown_url} is closed")
        if self._pubsub is None:
            self._pubsub = self._conn.client.pubsub()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        return self._pubsub

    async def _read(self) -> None:
        broken = False
        while not self._closed:
            try:
                if not self._pubsub.subscribed:
                    self._active.clear()
                    await self._active.wait()
                    continue
                msg = await self._pubsub.get_message(timeout=READ_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except (rex.RedisError, OSError, RuntimeError) as exc:
                if not broken:
                    log.warning("status watch connection to %s lost (%s); reconnecting", self._conn.shown_url,
                                self._conn.config.redact(str(exc)))
                broken = True
                self._broadcast(RESYNC)
                await asyncio.sleep(RECONNECT_WAIT_S)
                continue
            if broken:
                broken = False
                self._broadcast(RESYNC)
            if msg is None:
                continue
            kind = msg.get("type")
            channel = msg.get("channel")
            if kind == "subscribe":
                waiter = self._confirm.get(channel)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                else:
                    # redis-py reconnected and subscribed again by itself: what was
                    # published meanwhile is lost, so the watchers re-read the status.
                    for queue in list(self._watchers.get(channel, ())):
                        queue.put_nowait(RESYNC)
            elif kind == "message":
                for queue in list(self._watchers.get(channel, ())):
                    queue.put_nowait(msg.get("data"))

    def _broadcast(self, item: object) -> None:
        for group in self._watchers.values():
            for queue in group:
                queue.put_nowait(item)

    async def close(self) -> None:
        self._closed = True
        self._active.set()
        self._broadcast(CLOSED)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, rex.RedisError, OSError):
                pass
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except (rex.RedisError, OSError):
                pass


__all__ = ["CLOSED", "RESYNC", "RedisWatchHub"]
