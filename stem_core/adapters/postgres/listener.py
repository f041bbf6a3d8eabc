"""LISTEN on a dedicated connection and hand notifications to callbacks.

psycopg's ``notifies()`` holds its connection (any other query on it waits until the
generator returns), so the listener owns one autocommit connection used for nothing
else. It loops over ``notifies(timeout=...)``; after each quiet period it probes the
connection with ``SELECT 1``. When the connection breaks (server restart) it reconnects
with backoff, LISTENs again and calls ``on_reconnect`` so every waiter re-checks the
database: notifications sent while we were away are lost, the rows are not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import psycopg

from ...errors import BrokerUnavailable
from .connection import quote_ident, translate
from .url import PostgresConfig

log = logging.getLogger(__name__)

# How long one notifies() call blocks before the liveness probe.
LISTEN_PROBE_INTERVAL_S = 5.0
RECONNECT_BACKOFF_MIN_S = 0.1
RECONNECT_BACKOFF_MAX_S = 2.0


class PostgresListener:
    """One LISTEN connection for one channel, started lazily, restarted after failures."""

    def __init__(self, config: PostgresConfig, channel: str, on_notify: Callable[[str], None],
                 on_reconnect: Callable[[], None], unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> None:
        self._config = config
        self._channel = channel
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._unavailable = unavailable
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Connect and LISTEN (raises ``BrokerUnavailable`` when the server is down).
        Notifications committed after this returns are delivered."""
        async with self._start_lock:
            if self._task is not None and not self._task.done():
                return
            self._conn = await self._connect()
            self.connected.set()
            self._task = asyncio.create_task(self._run(), name=f"stem-pg-listen-{self._channel}")

    async def _connect(self) -> psycopg.AsyncConnection:
        with translate(self._config, self._unavailable):
            conn = await psycopg.AsyncConnection.connect(self._config.conninfo, autocommit=True)
            try:
                await conn.execute(f"LISTEN {quote_ident(self._channel)}")
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _run(self) -> None:
        backoff = RECONNECT_BACKOFF_MIN_S
        while True:
            conn = self._conn
            try:
                if conn is None:
                    conn = self._conn = await self._connect()
                    self.connected.set()
                    backoff = RECONNECT_BACKOFF_MIN_S
                    self._on_reconnect()
                async for note in conn.notifies(timeout=LISTEN_PROBE_INTERVAL_S):
                    self._on_notify(note.payload)
                await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                self.connected.clear()
                log.warning("stem postgres listener on %s lost its connection (%s); reconnecting",
                            self._channel, self._config.redact(str(exc).strip() or type(exc).__name__))
                self._conn = None
                if conn is not None:
                    await _close_quietly(conn)
                await asyncio.sleep(backoff)
                backoff = min(RECONNECT_BACKOFF_MAX_S, backoff * 2)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - the loop is gone either way
                pass
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)
        self.connected.clear()


async def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
        pass


__all__ = ["PostgresListener", "LISTEN_PROBE_INTERVAL_S"]
