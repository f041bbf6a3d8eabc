"""A batch of publishes as one write: the one place Stem uses aiormq's internals.

aiormq's ``basic_publish`` sends every message as a write of its own (a system call
each, about half the cost of a publish here), then waits for its confirm. For
``publish_many`` Stem does what ``basic_publish`` does for each message (next delivery
tag, a confirmation future, the message id that a returned message is matched by),
under the channel's lock, but marshals the whole batch into one frame buffer: one
write, then every confirm awaited together.

Internals used (``tests/integration/test_rabbitmq_wire.py`` fails when an aiormq
upgrade moves one): ``Channel.lock``, ``delivery_tag``, ``confirmations``,
``message_id_delivery_tag``, ``create_future``, ``_split_body``, ``write_queue``,
``number`` and ``aiormq.abc.ChannelFrame``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from random import getrandbits
from typing import Any, Sequence
from uuid import UUID

from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader


def _forget_message_id(channel: Any, message_id: str, tag: int, _: asyncio.Future[Any]) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)


async def publish_batch(channel: AbstractChannel, items: Sequence[Any]) -> list[asyncio.Future[Any]]:
    """Send ``items`` (``publish.Outgoing``) as one write on a confirm channel; returns
    one confirmation future each: ``Basic.Ack``, ``Basic.Nack``, the returned message
    (unroutable), or cancelled/failed when the channel closed first."""
    ch: Any = channel
    futures: list[asyncio.Future[Any]] = []
    frames: list[Any] = []
    async with ch.lock:
        first = ch.delivery_tag + 1
        try:
            for item in items:
                props = item.props
                if not props.message_id:
                    props.message_id = UUID(int=getrandbits(128), version=4).hex
                ch.delivery_tag += 1
                tag = ch.delivery_tag
                future = ch.create_future()
                ch.confirmations[tag] = future
                ch.message_id_delivery_tag[props.message_id] = tag
                future.add_done_callback(partial(_forget_message_id, ch, props.message_id, tag))
                futures.append(future)
                frames.append(spec.Basic.Publish(exchange=item.exchange, routing_key=item.routing_key,
                                                 mandatory=item.mandatory))
                frames.append(ContentHeader(properties=props, body_size=len(item.body)))
                frames.extend(ch._split_body(item.body))
            await ch.write_queue.put(ChannelFrame.marshall(frames=frames, channel_number=ch.number))
        except BaseException:
            # Nothing reached the server: give the tags back, as basic_publish does.
            ch.delivery_tag = first - 1
            for tag in range(first, first + len(futures)):
                ch.confirmations.pop(tag, None)
            for future in futures:
                future.cancel()
            raise
    return futures


__all__ = ["publish_batch"]
