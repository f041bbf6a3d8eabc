"""``RabbitMQSubscription``: one ``consume`` call's channel, consumers and local buffer.

Each subscription has a channel of its own with ``basic.qos(window)`` (``prefetch``,
plus ``refill`` read ahead when ``refill`` > 1) and one consumer per queue, so RabbitMQ
pushes each queue's messages in its own order (priority, then FIFO) and never more than
``window`` unacked per queue. Pushed messages wait in a local buffer ranked by priority,
then age (``codec.rank_us``); ``take`` hands out the best. The subscription so holds at
most ``prefetch`` deliveries handed out (the base class caps it), while RabbitMQ may
have pushed up to ``window`` per queue: across n queues a subscription may keep up to
``n x window`` messages from other consumers.

Across queues, order is exact for what the buffer holds: when the subscription opens,
one synchronous call after the last ``basic.consume`` lets every queue's first pushes
arrive before anything is handed out. Later, a queue refills its buffer slot
asynchronously after each ack, so a message of another queue may go first while the
refill is on the wire (documented in docs/rabbitmq.md).

Closing cancels the consumers and hands back (nack, requeue) what was pushed but not
handed out; the channel stays open until every delivery handed out on it is settled,
because closing it would make the server take those back. A channel that closed under
the subscription (connection lost) is replaced on the next receive.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
from collections import deque
from typing import Awaitable, Callable

from aiormq import exceptions as amqp
from aiormq.abc import AbstractChannel, DeliveredMessage

from ...clock import utcnow
from ...contract.broker import Subscription
from ...envelope import Delivery, Envelope
from . import codec
from .channels import RabbitMQChannels
from .connection import TRANSIENT, RabbitMQConnection, close_quietly, shielded
from .leases import RabbitMQLeases
from .names import RabbitMQNames
from .topology import RabbitMQTopology

log = logging.getLogger("stem.rabbitmq")

# Handlers the consumer part gives the subscription for messages it must not hand out.
Handler = Callable[[DeliveredMessage, Envelope, str], Awaitable[None]]


class RabbitMQSubscription:
    """The server side of one subscription and the messages pushed to it."""

    def __init__(self, sub: Subscription, conn: RabbitMQConnection, names: RabbitMQNames,
                 topology: RabbitMQTopology, leases: RabbitMQLeases, channels: RabbitMQChannels, *,
                 early: Handler, invalid: Handler, recount: Handler) -> None:
        self.sub = sub
        self._conn = conn
        self._names = names
        self._topology = topology
        self._leases = leases
        self._channels = channels
        self._early = early
        self._invalid = invalid
        self._recount = recount
        self.token = os.urandom(6).hex()
        self.channel: AbstractChannel | None = None
        self.closed = False
        self.arrived = asyncio.Event()
        self._buffer: list[tuple[tuple[int, int, int], DeliveredMessage, Envelope, str]] = []
        self._broadcasts: deque[tuple[str, Envelope]] = deque()
        self._held: dict[AbstractChannel, int] = {}
        self._seq = itertools.count()
        self._exchanges: dict[str, str] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._closer: asyncio.Future[None] | None = None
        self._late: set[str] = set()  # queues of messages handed back as they arrived after close

    @property
    def window(self) -> int:
        """``basic.qos`` per consumer: ``prefetch``, plus ``refill`` read ahead when refill > 1.
        The base class claims again only once ``refill`` slots are free; the read-ahead
        means those messages are already here then, instead of a round trip behind the
        last ack (a worker claims half its prefetch at a time)."""
        refill = self.sub.refill
        return self.sub.prefetch + (refill if refill > 1 else 0)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, wait: float) -> None:
        """Declare what the subscription reads (once per process), open a channel with its
        prefetch and one consumer per queue; again after the channel was lost. Runs to
        its end even if the caller is cancelled (``shielded``)."""
        task = asyncio.ensure_future(self._start(wait))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller gave up on the subscription (a cancelled receive ends it): once
            # the channel is open, close it again, so its consumers do not take messages.
            self.closed = True
            task.add_done_callback(self._abandoned)
            raise
        if self.closed:  # closed while starting: nobody will read what it would push
            await self.close()

    async def _start(self, wait: float) -> None:
        old, self.channel = self.channel, None
        if old is not None:
            self._buffer = [entry for entry in self._buffer if not entry[1].channel.is_closed]
            heapq.heapify(self._buffer)
        for queue in self.sub.queues:
            await self._topology.queue(queue)
        self._exchanges = await self._channels.exchanges(self.sub.channels)
        channel = await self._conn.channel(wait=wait)
        try:
            await channel.basic_qos(prefetch_count=self.window)
            if self._exchanges:
                await self._channels.open_mailbox(channel, self.token, self._exchanges, self._on_broadcast)
            for queue in self.sub.queues:
                await channel.basic_consume(self._names.work(queue), self._consumer_for(queue))
            if len(self.sub.queues) > 1:
                # Every queue's first pushes precede this reply on the wire (see the module docstring).
                await channel.basic_qos(prefetch_count=self.window)
            await asyncio.sleep(0)  # callbacks of deliveries read with the last reply run first
        except amqp.ChannelNotFoundEntity:
            # A queue deleted (by someone else) since this process declared it.
            for queue in self.sub.queues:
                self._topology.forget(queue)
            raise
        except BaseException:
            if not channel.is_closed:
                await channel.close()
            raise
        self.channel = channel

    def _abandoned(self, task: "asyncio.Future[None]") -> None:
        if not task.cancelled() and task.exception() is not None:
            log.debug("an abandoned subscription did not start: %s", task.exception())
        # Not in _tasks: close() waits for those, and must not wait for itself.
        self._closer = asyncio.ensure_future(self.close())

    async def flush(self) -> None:
        """Wait until every message the server pushed before now is in the buffer: a
        synchronous call on the channel answers after the deliveries sent before it."""
        channel = self.channel
        if channel is None or channel.is_closed:
            return
        try:
            await shielded(channel.basic_qos(prefetch_count=self.window))
        except TRANSIENT:
            return
        await asyncio.sleep(0)  # their callbacks, scheduled before the reply, run first

    def ready(self) -> int:
        """Queue messages waiting in the buffer."""
        return len(self._buffer)

    def healthy(self) -> bool:
        return self.channel is not None and not self.channel.is_closed

    async def close(self) -> None:
        """Stop consuming; hand back what was never handed out; keep held deliveries."""
        self.closed = True
        await shielded(self._close())

    async def _close(self) -> None:
        channel = self.channel
        if channel is not None and not channel.is_closed:
            try:
                # Cancelling is what makes the mailbox (auto-delete) go away.
                for tag in list(channel.consumers):
                    await channel.basic_cancel(tag)
            except TRANSIENT:
                pass
        unused, self._buffer = self._buffer, []
        for _, message, envelope, _ in unused:
            await self._hand_back(message, envelope)
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        await self._settled_back(channel, {queue for *_, queue in unused} | self._late)
        self._close_if_idle(channel)

    async def _hand_back(self, message: DeliveredMessage, envelope: Envelope) -> None:
        if message.channel.is_closed:
            return
        self._leases.handed_back(envelope.id)
        try:
            await message.channel.basic_nack(message.delivery_tag or 0, requeue=True, wait=False)
        except TRANSIENT:
            pass

    async def _settled_back(self, channel: AbstractChannel | None, queues: set[str]) -> None:
        """Return only once the queues hold what was handed back. ``basic.nack`` has no
        reply; a passive declare on the same channel does, and the server answers it after
        the requeues sent before it (the channel talks to each queue in order), so a
        ``queue_stats`` read after ``close`` counts those messages as pending again."""
        if channel is None or channel.is_closed:
            return
        for queue in sorted(queues):
            try:
                await channel.queue_declare(self._names.work(queue), passive=True)
            except TRANSIENT:
                return

    def released(self, channel: AbstractChannel) -> None:
        """A delivery handed out on ``channel`` was settled (``HoldOwner``)."""
        left = self._held.get(channel, 0) - 1
        if left > 0:
            self._held[channel] = left
            return
        self._held.pop(channel, None)
        if self.closed or channel is not self.channel:
            self._close_if_idle(channel)

    def _close_if_idle(self, channel: AbstractChannel | None) -> None:
        if channel is None or self._held.get(channel) or channel.is_closed:
            return
        task = asyncio.get_running_loop().create_task(close_quietly(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- arrivals -------------------------------------------------------------------

    def _consumer_for(self, queue: str) -> Callable[[DeliveredMessage], Awaitable[None]]:
        async def on_message(message: DeliveredMessage) -> None:
            self._arrive(queue, message)

        return on_message

    def _arrive(self, queue: str, message: DeliveredMessage) -> None:
        envelope, ok = codec.decode(message.body, f"amqp-{self.token}-{message.delivery_tag}", queue)
        if self.closed:
            self._late.add(queue)
            self._spawn(self._hand_back(message, envelope))
            return
        if not ok:
            self._spawn(self._invalid(message, envelope, queue))
            return
        if envelope.queue != queue:  # written by another program: the queue it came from wins
            envelope = envelope.replace(queue=queue)
        if envelope.not_before is not None and envelope.not_before > utcnow():
            # Early by this host's clock (or delayed past the 49-day ceiling): wait again.
            self._spawn(self._early(message, envelope, queue))
            return
        if message.redelivered and not self._leases.was_handed_back(envelope.id):
            # Its consumer died holding it: re-published with the delivery counted (once
            # that copy is confirmed this one is acked), joining the back of the queue.
            self._spawn(self._recount(message, envelope, queue))
            return
        key = (-envelope.priority, codec.rank_us(envelope, message.header.properties.headers), next(self._seq))
        heapq.heappush(self._buffer, (key, message, envelope, queue))
        self.arrived.set()

    async def _on_broadcast(self, message: DeliveredMessage) -> None:
        channel = self._exchanges.get(message.exchange or "")
        if channel is None:
            return
        envelope, ok = codec.decode(message.body, f"amqp-{self.token}-{message.delivery_tag}", channel)
        if ok:
            self._broadcasts.append((channel, envelope))
            self.arrived.set()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handing out ----------------------------------------------------------------

    def take(self, limit: int) -> list[Delivery]:
        """Broadcast copies, then up to ``limit`` queue deliveries, best first."""
        out = [Delivery(envelope=env, receipt=f"b:{self.token}:{next(self._seq)}", queue=channel, channel=channel)
               for channel, env in self._broadcasts]
        self._broadcasts.clear()
        buffer = self._buffer
        while buffer and limit > 0:
            _, message, envelope, queue = heapq.heappop(buffer)
            if message.channel.is_closed:
                continue  # the server took it back with its channel
            self._held[message.channel] = self._held.get(message.channel, 0) + 1
            out.append(self._leases.hold(message, envelope, queue, self.sub.consumer, self))
            limit -= 1
        return out


__all__ = ["RabbitMQSubscription"]
