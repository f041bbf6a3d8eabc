"""``RabbitMQConsumer``: subscriptions, receive, and the settle primitives.

Receiving waits on the subscription's buffer (RabbitMQ pushes; nothing polls). A
subscription whose channel closed (connection lost, server restarted) opens a new one
on the next receive, so consumers go on by themselves once aio-pika reconnected;
meanwhile a receive returns nothing after its timeout instead of failing.

Settling (fenced by ``RabbitMQLeases``):

* ``ack``: ``basic.ack``; ``nack(requeue=False)``: ``basic.reject``;
* ``nack(requeue=True)``: the next attempt is a new message (its ``attempt`` and maybe
  ``not_before`` changed, and AMQP cannot change a message), published with confirm,
  then the old delivery is acked: it joins the back of its queue (or the delay levels);
* ``dead_letter``: published to the dead queue with its reason and meta, then acked.

A message that arrives before its ``not_before`` (by this host's clock) is delayed
again for the rest of its wait; one whose body is not an envelope is dead-lettered as
``invalid-envelope``. Neither is ever handed out.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from aiormq.abc import DeliveredMessage

from ...clock import monotonic, utcnow
from ...contract.broker import Subscription, raise_if_cancelled
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, StemError
from . import codec
from .channels import RabbitMQChannels
from .connection import TRANSIENT, RabbitMQConnection
from .leases import RabbitMQLeases
from .names import RabbitMQNames
from .publish import RabbitMQPublisher
from .subscription import RabbitMQSubscription
from .topology import RabbitMQTopology

log = logging.getLogger("stem.rabbitmq")

# A receive that found the connection down tries again this often within its wait.
RETRY_PAUSE_S = 0.2


class RabbitMQConsumer:
    """Every open subscription of one broker object."""

    def __init__(self, conn: RabbitMQConnection, names: RabbitMQNames, topology: RabbitMQTopology,
                 publisher: RabbitMQPublisher, leases: RabbitMQLeases, channels: RabbitMQChannels) -> None:
        self._conn = conn
        self._names = names
        self._topology = topology
        self._publisher = publisher
        self._leases = leases
        self._channels = channels
        self._open: set[RabbitMQSubscription] = set()

    # -- subscriptions --------------------------------------------------------------

    async def open(self, sub: Subscription) -> None:
        state = RabbitMQSubscription(sub, self._conn, self._names, self._topology, self._leases, self._channels,
                                     early=self._delay_again, invalid=self._dead_invalid,
                                     recount=self._recount)
        try:
            await state.start(wait=self._conn.config.connect_timeout_s)
        except Exception as exc:
            self._conn.fail(exc)
        sub.state = state
        self._open.add(state)

    async def close(self, sub: Subscription) -> None:
        state: RabbitMQSubscription | None = sub.state
        if state is not None:
            self._open.discard(state)
            await state.close()

    async def close_all(self) -> None:
        for state in list(self._open):
            await state.close()
        self._open.clear()

    async def receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: RabbitMQSubscription = sub.state
        deadline = monotonic() + timeout
        while True:
            raise_if_cancelled()
            if not state.healthy():
                if not await self._restart(state, deadline):
                    return []
            state.arrived.clear()
            ready = state.ready()
            if 0 < ready < limit and sub.prefetch - len(sub.outstanding) - ready < sub.refill:
                # Handing out this partial batch would leave the subscription short of a
                # refill: let pushes already on their way in first (one round trip). Before
                # anything is taken, so a cancel here leaves no delivery half handed out.
                await state.flush()
            out = state.take(limit)
            if out:
                return out
            left = deadline - monotonic()
            if left <= 0:
                return []
            try:
                async with asyncio.timeout(left):
                    await state.arrived.wait()
            except TimeoutError:
                return state.take(limit)

    async def _restart(self, state: RabbitMQSubscription, deadline: float) -> bool:
        """Reopen a subscription whose channel was lost; False when not (yet) possible."""
        while True:
            try:
                await state.start(wait=max(0.0, deadline - monotonic()))
                return True
            except Exception as exc:  # down, or a queue deleted under us (declared again)
                if not self._conn.is_open:
                    raise BrokerUnavailable(f"the connection to {self._conn.config.where} is closed") from None
                log.debug("subscription %s waiting for RabbitMQ: %s", state.sub.consumer, exc)
                left = deadline - monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(left, RETRY_PAUSE_S))

    async def unclaim(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            hold = self._leases.take(delivery.receipt)
            if hold is not None:
                await self._leases.give_back(hold)

    # -- settling -------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        if delivery.channel is None and (hold := self._leases.take(delivery.receipt)) is not None:
            await self._leases.ack(hold)

    async def nack(self, delivery: Delivery, requeued: Envelope | None) -> None:
        """``requeued``: the next attempt's envelope, or None to drop the message."""
        if delivery.channel is not None:
            return
        if requeued is None:
            if (hold := self._leases.take(delivery.receipt)) is not None:
                await self._leases.reject(hold)
            return
        hold = self._leases.take(delivery.receipt)
        if hold is not None:
            await self._republish_then_ack(hold, self._publisher.message(requeued, deliveries=hold.deliveries, rank=True))

    async def dead_letter(self, delivery: Delivery, reason: str, meta: dict[str, Any]) -> None:
        if delivery.channel is not None:
            return
        message = self._publisher.dead(delivery.queue, delivery.envelope, reason, meta, utcnow())  # ValueError first
        hold = self._leases.take(delivery.receipt)
        if hold is not None:
            await self._republish_then_ack(hold, message)

    def extend(self, delivery: Delivery, seconds: float) -> datetime:
        return self._leases.extend(delivery.receipt, seconds)

    async def _republish_then_ack(self, hold: Any, message: Any) -> None:
        try:
            await self._publisher.send([message])
        except BaseException:
            self._leases.restore(hold)  # nothing changed: the holder still holds it
            raise
        await self._leases.ack(hold)

    # -- messages never handed out --------------------------------------------------

    async def _delay_again(self, message: DeliveredMessage, envelope: Envelope, queue: str) -> None:
        deliveries = codec.header_int(message.header.properties.headers, codec.H_DELIVERIES)
        await self._replace(message, [self._publisher.message(envelope, deliveries=deliveries)])

    async def _recount(self, message: DeliveredMessage, envelope: Envelope, queue: str) -> None:
        """RabbitMQ redelivered ``message`` because its consumer died or lost its channel
        holding it: AMQP says only that (a flag), not how often. Re-publish it with that
        delivery counted in ``x-stem-deliveries``, so a task that kills its worker every
        time is seen delivered 2, 3, 4... times and the worker's delivery limit can stop it."""
        deliveries = codec.header_int(message.header.properties.headers, codec.H_DELIVERIES) + 1
        await self._replace(message, [self._publisher.message(envelope, deliveries=deliveries, rank=True)])

    async def _dead_invalid(self, message: DeliveredMessage, envelope: Envelope, queue: str) -> None:
        log.warning("dead-lettering a message of queue %s that is not a Stem envelope", queue)
        await self._replace(message, [self._publisher.dead(queue, envelope, codec.INVALID_REASON, {}, utcnow())])

    async def _replace(self, message: DeliveredMessage, items: list[Any]) -> None:
        """Publish ``items`` instead of ``message``, then ack it (requeue it on failure)."""
        channel, tag = message.channel, message.delivery_tag or 0
        sent = True
        try:
            await self._publisher.send(items)
        except StemError as exc:
            log.warning("could not re-route message %s: %s", tag, exc)
            sent = False
        if channel.is_closed:
            return  # the server took it back with its channel
        try:
            if sent:
                await channel.basic_ack(tag, wait=False)
            else:
                await channel.basic_nack(tag, requeue=True, wait=False)
        except TRANSIENT:
            pass


__all__ = ["RabbitMQConsumer"]
