"""``RabbitMQPublisher``: every message Stem sends, with publisher confirms.

A publish returns once the server confirmed it (``basic.ack``: a persistent message on
a durable queue is on disk); ``publish_many`` sends the whole batch before waiting, so
its confirms arrive together (RabbitMQ acks them ``multiple``). Messages are
``mandatory``: one the server cannot route (its queue was deleted since this process
declared it) comes back, and is sent again after the queue is declared again.

A publish that loses the connection is sent again once aio-pika reconnected (for up to
``publish_timeout`` seconds, then ``BrokerUnavailable``). A message whose confirm was
lost with the connection may so be stored twice: delivery is at least once. A batch
goes out as one write (``wire.py``), its confirms awaited together.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from ...clock import monotonic, utcnow
from ...envelope import Envelope
from ...errors import BrokerUnavailable, InvalidEnvelope, StemError
from . import codec
from .connection import TRANSIENT, RabbitMQConnection, shielded
from .names import LEVELS, RabbitMQNames, delay_ms
from .topology import RabbitMQTopology
from .url import RabbitMQConfig
from .wire import publish_batch

# A message that keeps coming back unroutable after this many re-declarations fails.
MAX_RETURNS = 3
# Between attempts after a lost connection.
RETRY_PAUSE_S = 0.05
# Publishes of one publish_many in flight at once (bounds memory, not round trips).
PIPELINE = 1000
_CHANNEL_GONE = (*TRANSIENT, asyncio.CancelledError)
WORK, DELAYED, DEAD = "work", "delayed", "dead"


class Outgoing:
    """One message ready to send: where to, the bytes, and the Stem queue it serves."""

    __slots__ = ("exchange", "routing_key", "body", "props", "queue", "kind", "mandatory")

    def __init__(self, exchange: str, routing_key: str, body: bytes, props: Basic.Properties, queue: str | None,
                 kind: str = WORK, mandatory: bool = True) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.props = props
        self.queue = queue
        self.kind = kind  # what must be declared first: WORK, DELAYED, DEAD (or nothing)
        self.mandatory = mandatory


class RabbitMQPublisher:
    """Builds and sends messages; declares a queue's topology before its first message."""

    def __init__(self, conn: RabbitMQConnection, names: RabbitMQNames, topology: RabbitMQTopology,
                 config: RabbitMQConfig) -> None:
        self._conn = conn
        self._names = names
        self._topology = topology
        self._config = config
        self._delay_entry = names.level_exchange(LEVELS - 1)

    # -- building -------------------------------------------------------------------

    def message(self, envelope: Envelope, *, deliveries: int = 0, rank: bool = False,
                now: datetime | None = None) -> Outgoing:
        """``envelope`` to its queue, through the delay levels when ``not_before`` is ahead.

        ``deliveries``: times already handed out (a re-publish); ``rank``: a re-publish
        joining the back of its queue now (ranked by now among equal priorities)."""
        queue = envelope.queue
        body = codec.body(envelope)
        if len(body) > self._config.max_message_bytes:
            raise InvalidEnvelope(f"envelope {envelope.id} is {len(body)} bytes; {self._config.where} takes at most "
                                  f"{self._config.max_message_bytes} (max_message_bytes)")
        nb = envelope.not_before
        if nb is not None:
            now = now or utcnow()
            ms = delay_ms(nb, now)
            if ms > 0:
                props = codec.properties(envelope, codec.republish_headers(deliveries, None))
                return Outgoing(self._delay_entry, self._names.delay_key(queue, ms), body, props, queue, DELAYED)
        headers = None
        if deliveries or rank:
            at = now or utcnow()
            headers = codec.republish_headers(deliveries, codec.to_us(at) if rank else None)
        return Outgoing("", self._names.work(queue), body, codec.properties(envelope, headers), queue)

    def dead(self, queue: str, envelope: Envelope, reason: str, meta: dict[str, Any], dead_at: datetime) -> Outgoing:
        props = codec.properties(envelope, codec.dead_headers(reason, meta, dead_at))
        return Outgoing("", self._names.dead(queue), codec.body(envelope), props, queue, DEAD)

    # -- sending --------------------------------------------------------------------

    async def publish(self, envelopes: list[Envelope]) -> None:
        now = utcnow() if len(envelopes) > 1 else None
        await self.send([self.message(env, now=now) for env in envelopes])

    async def declare(self, items: list[Outgoing]) -> None:
        needed = {(item.kind, item.queue) for item in items if item.queue is not None}
        for kind, queue in needed:
            if kind == DELAYED:
                await self._topology.levels(queue)
            elif kind == DEAD:
                await self._topology.dead(queue)
            else:
                await self._topology.queue(queue)

    async def send(self, items: list[Outgoing]) -> None:
        """Send ``items`` and wait for every confirm (see the module docstring)."""
        if not items:
            return
        await self.declare(items)
        deadline = monotonic() + self._config.publish_timeout_s
        pending, returns = items, 0
        while True:
            left = deadline - monotonic()
            try:
                channel = await self._conn.publisher(wait=max(0.0, left))
            except BrokerUnavailable as exc:
                raise BrokerUnavailable(f"publish to {self._config.where} failed: {exc}") from None
            outcomes = await self._send_all(channel, pending, max(0.1, left))
            unrouted = [item for item, out in zip(pending, outcomes) if isinstance(out, DeliveredMessage)]
            lost = [item for item, out in zip(pending, outcomes) if isinstance(out, _CHANNEL_GONE)]
            for out in outcomes:
                if isinstance(out, Basic.Nack):
                    raise BrokerUnavailable(f"{self._config.where} refused to store a message (publisher nack)")
                if isinstance(out, BaseException) and not isinstance(out, _CHANNEL_GONE):
                    raise self._conn.translate(out)
            if not unrouted and not lost:
                return
            if unrouted:
                returns += 1
                if returns > MAX_RETURNS:
                    raise StemError(f"{self._config.where} cannot route messages to queue {unrouted[0].queue!r}")
                for item in unrouted:
                    if item.queue is not None:
                        self._topology.forget(item.queue)
                await self.declare(unrouted)
            if monotonic() >= deadline:
                raise BrokerUnavailable(f"publish to {self._config.where} was not confirmed within "
                                        f"{self._config.publish_timeout_s:g} s (publish_timeout)")
            if lost:
                await asyncio.sleep(RETRY_PAUSE_S)
            pending = unrouted + lost

    async def _send_all(self, channel: AbstractChannel, items: list[Outgoing], timeout: float) -> list[Any]:
        if len(items) == 1:
            try:
                return [await self._one(channel, items[0], timeout)]
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                return [exc]
        outcomes: list[Any] = []
        for start in range(0, len(items), PIPELINE):
            chunk = items[start:start + PIPELINE]
            try:
                futures = await shielded(publish_batch(channel, chunk))
            except TRANSIENT as exc:
                outcomes += [exc] * len(chunk)
                continue
            await asyncio.wait(futures, timeout=timeout)
            for future in futures:
                if not future.done():
                    future.cancel()  # not confirmed in time: sent again
                    outcomes.append(_lost())
                elif future.cancelled():
                    outcomes.append(_lost())  # the channel closed before the confirm
                else:
                    outcomes.append(future.exception() or future.result())
        return outcomes

    @staticmethod
    async def _one(channel: AbstractChannel, item: Outgoing, timeout: float) -> Any:
        try:
            return await channel.basic_publish(item.body, exchange=item.exchange, routing_key=item.routing_key,
                                               properties=item.props, mandatory=item.mandatory, timeout=timeout,
                                               wait=False)
        except asyncio.CancelledError:
            if channel.is_closed:  # the channel died under us: a lost publish, not our cancel
                return _lost()
            raise


def _lost() -> BaseException:
    return ConnectionError("the channel closed before the server confirmed")


__all__ = ["DEAD", "DELAYED", "MAX_RETURNS", "Outgoing", "PIPELINE", "RabbitMQPublisher", "WORK"]
