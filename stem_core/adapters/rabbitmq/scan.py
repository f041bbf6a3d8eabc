"""``RabbitMQScan``: read the ready messages of a queue without losing their order.

AMQP has no "look at" or "delete by id": the only way to see a message is to be
delivered it. A scan consumes every ready message of one queue on a channel of its own
(no prefetch limit), acks the ones the caller settles, and closes the channel: the
server then puts every other message back in its original position. Nothing is lost
if the process dies mid-scan (the channel closes the same way).

Used for dead letters and delay levels (queues nobody consumes) and, for ``remove``,
for a work queue: there the scan consumer outranks the workers (``x-priority``), so it
sees every ready message, and the cost is documented: while a scan holds a queue's
messages (milliseconds per thousand), its workers may receive messages published
during the scan first, and the messages it gives back carry AMQP's ``redelivered``
flag (other processes count that as one more delivery).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from aiormq.abc import AbstractChannel, DeliveredMessage

from ...clock import monotonic
from .connection import TRANSIENT, RabbitMQConnection, shielded

# A scan stops once no message arrived for this long (the queue had fewer messages
# than its count said: others took some meanwhile).
SCAN_IDLE_S = 0.25
# Consumer priority of a scan of a work queue: above any worker (they use the default 0).
SCAN_PRIORITY = 100


class RabbitMQScan:
    """``async with RabbitMQScan(conn) as scan: messages = await scan.take_all(queue)``."""

    def __init__(self, conn: RabbitMQConnection) -> None:
        self._conn = conn
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> "RabbitMQScan":
        self._channel = await self._conn.channel()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                await shielded(channel.close())  # the server requeues everything not acked, in order
            except TRANSIENT:
                pass

    async def take_all(self, queue: str, *, outrank: bool = False) -> list[DeliveredMessage]:
        """Every message ready in ``queue`` now (oldest first for a plain queue)."""
        return await shielded(self._take_all(queue, outrank))

    async def _take_all(self, queue: str, outrank: bool) -> list[DeliveredMessage]:
        counts = await self._conn.passive(queue)
        if counts is None or counts.message_count == 0:
            return []
        expected = counts.message_count
        channel = self._channel
        assert channel is not None, "take_all outside 'async with'"
        got: list[DeliveredMessage] = []
        arrived = asyncio.Event()

        async def on_message(message: DeliveredMessage) -> None:
            got.append(message)
            arrived.set()

        try:
            await channel.basic_qos(prefetch_count=0)
            ok = await channel.basic_consume(queue, on_message,
                                             arguments={"x-priority": SCAN_PRIORITY} if outrank else None)
            last = monotonic()
            while len(got) < expected:
                arrived.clear()
                seen = len(got)
                try:
                    async with asyncio.timeout(SCAN_IDLE_S):
                        await arrived.wait()
                except TimeoutError:
                    pass
                if len(got) > seen:
                    last = monotonic()
                elif monotonic() - last >= SCAN_IDLE_S:
                    break
            await channel.basic_cancel(ok.consumer_tag or "")
            await asyncio.sleep(0)  # deliveries read before the cancel-ok run their callbacks
        except Exception as exc:
            self._conn.fail(exc)
        return got

    async def ack(self, message: DeliveredMessage) -> None:
        try:
            await message.channel.basic_ack(message.delivery_tag or 0)
        except Exception as exc:
            self._conn.fail(exc)


__all__ = ["RabbitMQScan", "SCAN_IDLE_S"]
