"""``RabbitMQTopology``: idempotent declarations of a namespace's queues and exchanges.

Each Stem queue is declared once per process, on first use (publish, consume; a stats
read does not declare): its work queue (durable classic, ``x-max-priority`` 9; quorum
queues reject priorities on RabbitMQ 3.10). Its dead queue comes with its first dead
letter, its 32 delay levels (and the shared level and ready exchanges) with its first
delayed message, so a queue that never delays or dead-letters is one queue on the
server. Stem's control-plane reply queues (``REPLY_QUEUE_PREFIX``, one per command an
operator sends) also get ``x-expires``: the server deletes them once nobody used them
for ``REPLY_QUEUE_EXPIRES_MS``, instead of keeping one empty queue per command forever.

A batch of declarations goes out with ``nowait`` on a channel of its own, closed by one
final synchronous call: one round trip, and a refused declaration (a queue that exists
with other arguments) fails that call without closing a channel other work uses.
Concurrent callers for the same name share one declaration.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from aiormq.abc import AbstractChannel

from ...settings import REPLY_QUEUE_PREFIX, REPLY_QUEUE_TTL_SECONDS
from .connection import RabbitMQConnection, shielded
from .names import LEVELS, MAX_PRIORITY, RabbitMQNames

CLASSIC = {"x-queue-type": "classic"}
REPLY_QUEUE_EXPIRES_MS = int(REPLY_QUEUE_TTL_SECONDS * 1000)


def work_arguments(queue: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {**CLASSIC, "x-max-priority": MAX_PRIORITY}
    if queue.startswith(REPLY_QUEUE_PREFIX):
        arguments["x-expires"] = REPLY_QUEUE_EXPIRES_MS
    return arguments


class RabbitMQTopology:
    """What this process has declared, and the declarations themselves."""

    def __init__(self, conn: RabbitMQConnection, names: RabbitMQNames) -> None:
        self._conn = conn
        self._names = names
        self._queues: set[str] = set()
        self._dead: set[str] = set()
        self._levels: set[str] = set()
        self._exchanges: set[str] = set()
        self._flying: dict[tuple[str, str], asyncio.Future[None]] = {}

    def known(self) -> set[str]:
        """Stem queues declared (or seen) by this process."""
        return set(self._queues)

    def forget(self, queue: str) -> None:
        """``queue``'s server objects may be gone (deleted, or a server reset): declare again."""
        self._queues.discard(queue)
        self._dead.discard(queue)
        self._levels.discard(queue)

    def remember(self, queue: str) -> None:
        self._queues.add(queue)

    async def queue(self, queue: str) -> None:
        if queue not in self._queues:
            await self._once(("queue", queue), lambda ch: self._declare_queue(ch, queue))
            self._queues.add(queue)

    async def dead(self, queue: str) -> None:
        if queue not in self._dead:
            await self._once(("dead", queue), lambda ch: self._declare_dead(ch, queue))
            self._dead.add(queue)

    async def levels(self, queue: str) -> None:
        if queue not in self._levels:
            await self.queue(queue)
            await self._once(("levels", ""), self._declare_level_exchanges)
            await self._once(("levels", queue), lambda ch: self._declare_levels(ch, queue))
            self._levels.add(queue)

    async def broadcast(self, channel: str) -> str:
        exchange = self._names.broadcast(channel)
        if exchange not in self._exchanges:
            await self._once(("bc", exchange), lambda ch: self._declare_exchange(ch, exchange, "fanout"))
            self._exchanges.add(exchange)
        return exchange

    async def has_levels(self, queue: str) -> bool:
        """True when ``queue``'s delay levels exist on the server (one passive declare)."""
        if queue in self._levels:
            return True
        return await self._conn.passive(self._names.level(queue, 0)) is not None

    # -- declarations ---------------------------------------------------------------

    async def _once(self, key: tuple[str, str], declare: Callable[[AbstractChannel], Awaitable[None]]) -> None:
        flying = self._flying.get(key)
        if flying is not None:
            return await asyncio.shield(flying)
        loop = asyncio.get_running_loop()
        flying = self._flying[key] = loop.create_future()
        try:
            await shielded(self._run(declare))
        except BaseException as exc:
            flying.set_exception(exc)
            flying.exception()  # retrieved here: joiners get it through await
            raise
        else:
            flying.set_result(None)
        finally:
            del self._flying[key]

    async def _run(self, declare: Callable[[AbstractChannel], Awaitable[None]]) -> None:
        channel = await self._conn.channel()
        try:
            await declare(channel)
            # The synchronous close: it answers only after every nowait call before it.
            await channel.basic_qos(prefetch_count=0)
        except Exception as exc:
            self._conn.fail(exc)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _declare_queue(self, channel: AbstractChannel, queue: str) -> None:
        await channel.queue_declare(self._names.work(queue), durable=True, arguments=work_arguments(queue), nowait=True)

    async def _declare_dead(self, channel: AbstractChannel, queue: str) -> None:
        await channel.queue_declare(self._names.dead(queue), durable=True, arguments=CLASSIC, nowait=True)

    async def _declare_exchange(self, channel: AbstractChannel, exchange: str, kind: str) -> None:
        await channel.exchange_declare(exchange, exchange_type=kind, durable=True, nowait=True)

    async def _declare_level_exchanges(self, channel: AbstractChannel) -> None:
        names = self._names
        await channel.exchange_declare(names.ready_exchange, exchange_type="topic", durable=True, nowait=True)
        for k in range(LEVELS):
            await channel.exchange_declare(names.level_exchange(k), exchange_type="topic", durable=True, nowait=True)
        for k in range(LEVELS):
            await channel.exchange_bind(names.after_level(k), names.level_exchange(k), names.pass_binding(k), nowait=True)

    async def _declare_levels(self, channel: AbstractChannel, queue: str) -> None:
        names = self._names
        for k in range(LEVELS):
            level = names.level(queue, k)
            arguments = {**CLASSIC, "x-message-ttl": 2**k, "x-dead-letter-exchange": names.after_level(k)}
            await channel.queue_declare(level, durable=True, arguments=arguments, nowait=True)
            await channel.queue_bind(level, names.level_exchange(k), names.level_binding(queue, k), nowait=True)
        await channel.queue_bind(names.work(queue), names.ready_exchange, names.ready_binding(queue), nowait=True)


__all__ = ["CLASSIC", "REPLY_QUEUE_EXPIRES_MS", "REPLY_QUEUE_PREFIX", "RabbitMQTopology", "work_arguments"]
