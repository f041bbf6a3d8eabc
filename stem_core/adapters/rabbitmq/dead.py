"""``RabbitMQDeadLetters``: list, get, replay and purge a queue's dead letters.

A queue's dead letters are the messages of its dead queue (``stem.N.dead.Q``), oldest
first, each the envelope as it died with ``x-stem-reason``, ``x-stem-meta`` and
``x-stem-dead-at`` headers. Nothing consumes a dead queue, so reading it is a scan
(``scan.py``): every dead letter is delivered to the reader, the ones it replays or
purges are acked, and closing the scan's channel puts the others back in order. Cost
grows with the number of dead letters (a page still reads them all); an unfiltered
purge is a single ``queue.purge``. Two readers at the same moment each see only what
the other is not holding.

Retention: after each dead letter a worker writes, ``prune`` takes the oldest messages
off the head of the dead queue with ``basic.get`` while they are older than the
retention (at most ``PRUNE_BATCH``), acks them, and stops at the first younger one,
which closing its channel puts back in place. A dead queue's arguments cannot carry an
``x-message-ttl``: queues declared before would refuse the new arguments
(PRECONDITION_FAILED), and a later change of the retention would too.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from aiormq import exceptions as amqp
from aiormq import spec
from aiormq.abc import DeliveredMessage

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import DeadLetterEntry, DeadLetterPage, ReplayResult
from ...settings import PRUNE_BATCH
from .codec import dead_entry
from .connection import RabbitMQConnection
from .names import RabbitMQNames
from .publish import RabbitMQPublisher
from .connection import TRANSIENT, shielded
from .scan import RabbitMQScan

log = logging.getLogger(__name__)


class RabbitMQDeadLetters:
    """Dead letters of one namespace."""

    def __init__(self, conn: RabbitMQConnection, names: RabbitMQNames, publisher: RabbitMQPublisher) -> None:
        self._conn = conn
        self._names = names
        self._publisher = publisher

    async def _entries(self, scan: RabbitMQScan, queue: str) -> list[tuple[DeliveredMessage, DeadLetterEntry]]:
        messages = await scan.take_all(self._names.dead(queue))
        return [(m, dead_entry(m.body, m.header.properties.headers, queue, f"dead-{i}")) for i, m in enumerate(messages)]

    async def list(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        async with RabbitMQScan(self._conn) as scan:
            entries = [entry for _, entry in await self._entries(scan, queue)]
        entries.reverse()
        page = entries[offset:offset + limit]
        end = offset + len(page)
        return DeadLetterPage(entries=page, next_offset=end if end < len(entries) and limit > 0 else None)

    async def get(self, queue: str, id: str) -> DeadLetterEntry | None:
        async with RabbitMQScan(self._conn) as scan:
            found = [entry for _, entry in await self._entries(scan, queue) if entry.envelope.id == id]
        return found[-1] if found else None

    async def replay(self, queue: str, *, limit: int, since: datetime | None, delay: float | None, dry_run: bool,
                     ids: set[str] | None, task: str | None) -> ReplayResult:
        if limit == 0:
            return ReplayResult(entries=[], dry_run=dry_run)
        async with RabbitMQScan(self._conn) as scan:
            picked = [(m, e) for m, e in await self._entries(scan, queue) if Broker.matches_replay(e, since, ids, task)]
            picked = picked[:limit]
            if not dry_run and picked:
                now = utcnow()
                replayed = [Broker.replayed_envelope(e.envelope, delay, now=now, queue=queue) for _, e in picked]
                await self._publisher.publish(replayed)
                for message, _ in picked:
                    await scan.ack(message)
        return ReplayResult(entries=[e for _, e in picked], dry_run=dry_run)

    async def purge(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        if since is None and limit is None:
            return await self._purge_all(queue)
        async with RabbitMQScan(self._conn) as scan:
            doomed = [(m, e) for m, e in await self._entries(scan, queue) if since is None or e.dead_at >= since]
            if limit is not None:
                doomed = doomed[:limit]
            for message, _ in doomed:
                await scan.ack(message)
        return len(doomed)

    async def prune(self, queue: str, retention: float) -> int:
        """Delete up to ``PRUNE_BATCH`` of the oldest dead letters older than ``retention``
        seconds; how many. A failure is logged, never raised: pruning must not fail (or
        undo) the dead letter just written."""
        try:
            return await shielded(self._prune(queue, utcnow() - timedelta(seconds=retention)))
        except Exception as exc:  # noqa: BLE001 - best effort, the next dead letter tries again
            log.warning("stem: pruning the dead letters of queue %s failed: %s", queue, exc)
            return 0

    async def _prune(self, queue: str, cutoff: datetime) -> int:
        name = self._names.dead(queue)
        channel = await self._conn.channel()
        pruned = 0
        try:
            while pruned < PRUNE_BATCH:
                message = await channel.basic_get(name, no_ack=False)
                if isinstance(message.delivery, spec.Basic.GetEmpty):
                    break
                entry = dead_entry(message.body, message.header.properties.headers, queue, "prune")
                if entry.dead_at >= cutoff:
                    break  # the oldest left is young enough: closing the channel puts it back
                await channel.basic_ack(message.delivery.delivery_tag)
                pruned += 1
        except amqp.ChannelNotFoundEntity:
            pass  # no dead queue yet (a stale receipt wrote nothing)
        finally:
            if not channel.is_closed:
                try:
                    await channel.close()  # the server requeues the unacked head, in place
                except TRANSIENT:
                    pass
        return pruned

    async def _purge_all(self, queue: str) -> int:
        channel = await self._conn.channel()
        try:
            return (await channel.queue_purge(self._names.dead(queue))).message_count or 0
        except amqp.ChannelNotFoundEntity:
            return 0
        except Exception as exc:
            self._conn.fail(exc)
        finally:
            if not channel.is_closed:
                await channel.close()


__all__ = ["RabbitMQDeadLetters"]
