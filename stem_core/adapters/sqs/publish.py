"""``SQSPublisher``: publish and publish_many onto the priority-band queues.

An envelope goes to the SQS queue of its Stem queue and priority (``names.py``), with
``DelaySeconds`` for a ``not_before`` up to 15 min ahead; a later one is sent with the
full 15 min and re-sent by the consumer that receives it early, until it is due.

Every envelope is encoded and size-checked before the first request, so an oversized
one fails the call (``InvalidEnvelope``, exit 2 from the CLI) with nothing sent. Then
sends are batched (``batch.py``); SQS cannot make a batch all-or-nothing, so when a
request fails part way the error names how many messages were not stored.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ...envelope import Envelope
from ...errors import StemError
from .batch import SQSBatches
from .codec import Outgoing, outgoing
from .connection import QueueMissing
from .names import band_kind
from .queues import SQSQueues


class SQSPublisher:
    """Sends envelopes (and re-sends, for the consumer and the dead letters)."""

    def __init__(self, queues: SQSQueues, batches: SQSBatches) -> None:
        self._queues = queues
        self._batches = batches

    async def publish(self, envelopes: list[Envelope]) -> None:
        groups: dict[tuple[str, str], list[Outgoing]] = defaultdict(list)
        for env in envelopes:
            groups[(env.queue, band_kind(env.priority))].append(outgoing(env))
        results = await asyncio.gather(*(self.send(q, kind, msgs) for (q, kind), msgs in groups.items()),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            if len(groups) > 1 and len(failures) < len(groups):
                raise type(failures[0])(f"{failures[0]} (other queues of this publish_many were stored)")
            raise failures[0]

    async def send(self, queue: str, kind: str, messages: list[Outgoing]) -> None:
        """Send to ``queue``'s ``kind`` SQS queue, creating it on first use. A queue
        deleted behind our back is created again, once."""
        url = await self._queues.ensure(queue, kind)
        try:
            await self._batches.send_all(url, messages)
        except QueueMissing:
            self._queues.forget(url)
            await self._batches.send_all(await self._queues.ensure(queue, kind), messages)
        except StemError as exc:
            if len(messages) > 1:
                raise type(exc)(f"{exc} (sending {len(messages)} messages to {queue}; some may be stored)") from None
            raise


__all__ = ["SQSPublisher"]
