"""``RabbitMQChannels``: broadcast over fanout exchanges.

Each Stem channel is a durable fanout exchange (``stem.N.bc.C``). A subscription that
listens to channels has a mailbox: one exclusive, auto-delete queue bound to each of
its channels' exchanges before ``consume`` returns, read without acks (a broadcast copy
needs no settling). So every subscriber of every process connected when a broadcast is
published gets its own copy, and the mailbox disappears with its subscription (or its
connection). Copies published while a subscriber's connection was down are not kept
for it, as with every other broker's broadcast.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Iterable

from aiormq.abc import AbstractChannel, DeliveredMessage

from ...envelope import Envelope
from . import codec
from .names import RabbitMQNames
from .publish import Outgoing, RabbitMQPublisher
from .topology import RabbitMQTopology


class RabbitMQChannels:
    """Publishes broadcasts and sets up subscribers' mailboxes."""

    def __init__(self, names: RabbitMQNames, topology: RabbitMQTopology, publisher: RabbitMQPublisher) -> None:
        self._names = names
        self._topology = topology
        self._publisher = publisher

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        exchange = await self._topology.broadcast(channel)
        # Not mandatory: a channel nobody listens to drops the copy, as it should.
        message = Outgoing(exchange, "", codec.body(envelope), codec.properties(envelope), None, "", mandatory=False)
        await self._publisher.send([message])

    async def exchanges(self, channels: Iterable[str]) -> dict[str, str]:
        """``{exchange: channel}`` for ``channels``, each exchange declared."""
        return {await self._topology.broadcast(channel): channel for channel in channels}

    async def open_mailbox(self, amqp_channel: AbstractChannel, token: str, exchanges: Iterable[str],
                           on_message: Callable[[DeliveredMessage], Awaitable[None]]) -> None:
        """Declare and bind the subscriber's mailbox on its channel and start reading it."""
        mailbox = self._names.subscriber(token)
        await amqp_channel.queue_declare(mailbox, exclusive=True, auto_delete=True)
        for exchange in exchanges:
            await amqp_channel.queue_bind(mailbox, exchange)
        await amqp_channel.basic_consume(mailbox, on_message, no_ack=True)


__all__ = ["RabbitMQChannels"]
