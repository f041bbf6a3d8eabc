"""Helpers of the SQLite integration modules: opening adapters on a file, reading the file
with a plain ``sqlite3`` connection, and receiving with a deadline (which only bounds a
hang: no test asserts how fast something happened)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from stem_core import Broker, Delivery, ResultBackend, connect_backend, connect_broker

DEADLINE_S = 10.0


class SQLiteOpener:
    """Opens SQLite adapters on one file and namespace by default, and closes all of them
    (newest first) in ``close``; see the ``open_sqlite`` fixture."""

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self.namespace = namespace
        self._opened: list[Broker | ResultBackend] = []

    async def broker(self, *, path: Path | None = None, namespace: str | None = None, **options: Any) -> Broker:
        broker = await connect_broker(self._url(path), namespace=namespace or self.namespace, **options)
        self._opened.append(broker)
        return broker

    async def backend(self, *, path: Path | None = None, namespace: str | None = None, **options: Any) -> ResultBackend:
        backend = await connect_backend(self._url(path), namespace=namespace or self.namespace, **options)
        self._opened.append(backend)
        return backend

    def _url(self, path: Path | None) -> str:
        return f"sqlite://{path or self.path}"

    async def close(self) -> None:
        for adapter in reversed(self._opened):
            await adapter.close()


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of one query, read on a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def take(broker: Broker, queues: list[str], count: int, *, prefetch: int | None = None,
               **options: Any) -> list[Delivery]:
    """Exactly ``count`` deliveries (fails after DEADLINE_S); the subscription is closed
    afterwards, so claims not handed out go back."""
    out = []
    deliveries = broker.consume(queues, prefetch=prefetch or max(count, 1), **options)
    try:
        async with asyncio.timeout(DEADLINE_S):
            async for delivery in deliveries:
                out.append(delivery)
                if len(out) == count:
                    break
    finally:
        await deliveries.aclose()  # type: ignore[attr-defined]
    return out


__all__ = ["DEADLINE_S", "SQLiteOpener", "rows", "take"]
