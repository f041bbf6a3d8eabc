"""``RabbitMQInspector``: list_queues, queue_stats, requeue, remove and purge.

* ``queue_stats``: ``pending`` and ``dead`` are the ready counts of the work and dead
  queues, ``delayed`` the sum over the queue's delay levels (passive declares: no scan,
  cost independent of queue length). ``inflight`` (unacknowledged) only the management
  API knows: without it, it is None and the front ends say so; ``oldest_pending_age``
  and the totals are None (AMQP does not tell a queue's age). A message RabbitMQ pushed
  to a subscription's buffer but not yet handed out counts as in flight, not pending.
* ``list_queues``: the queues this process used and, with the management API, every
  queue of the namespace; those with messages in any state.
* ``requeue``: a lease held by this broker object (fenced, re-published, acked) and
  delayed messages (found by a scan of the queue's delay levels); a lease held by
  another process cannot be taken from its channel (it returns when that process
  settles or disconnects) and is not counted.
* ``remove``: the same places, plus a scan of the ready messages for ids not found
  there (see ``scan.py`` for what a work-queue scan costs).
* ``purge``: ``queue.purge`` of the work queue and of every delay level (AMQP's purge
  leaves unacknowledged messages alone, as the contract wants). Queues are never
  deleted: a queue that still had unacknowledged messages would lose them.
"""

from __future__ import annotations

from typing import Callable

from aiormq import exceptions as amqp

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import QueueStats
from ...envelope import Envelope
from ...settings import REPLY_QUEUE_PREFIX
from . import codec
from .connection import RabbitMQConnection
from .leases import RabbitMQHold, RabbitMQLeases
from .management import RabbitMQManagement
from .names import LEVELS, RabbitMQNames
from .publish import Outgoing, RabbitMQPublisher
from .scan import RabbitMQScan
from .topology import RabbitMQTopology

# How a scan re-publishes a message it settles: (envelope, deliveries so far) -> message.
Replace = Callable[[Envelope, int], Outgoing]


class RabbitMQInspector:
    """Counts and repairs over passive declares, scans and this process's leases."""

    def __init__(self, conn: RabbitMQConnection, names: RabbitMQNames, topology: RabbitMQTopology,
                 publisher: RabbitMQPublisher, leases: RabbitMQLeases, management: RabbitMQManagement | None,
                 *, management_counts: bool = True) -> None:
        self._conn = conn
        self._names = names
        self._topology = topology
        self._publisher = publisher
        self._leases = leases
        self._management = management
        self._management_counts = management_counts

    # -- counts ---------------------------------------------------------------------

    async def queue_stats(self, queues: list[str]) -> list[QueueStats]:
        unacked = await self._unacked()
        out = []
        for queue in queues:
            work = await self._conn.passive(self._names.work(queue))
            dead = await self._conn.passive(self._names.dead(queue))
            if work is None:  # never used, or emptied and deleted: nothing can be in flight
                out.append(QueueStats(queue, 0, 0, 0, dead.message_count if dead is not None else 0, None))
                continue
            inflight = None if unacked is None else unacked.get(self._names.work(queue), 0)
            out.append(QueueStats(queue=queue, pending=work.message_count, delayed=await self._delayed(queue),
                                  inflight=inflight, dead=dead.message_count if dead is not None else 0,
                                  oldest_pending_age=None))
        return out

    async def _unacked(self) -> dict[str, int] | None:
        if self._management is None or not self._management_counts:
            return None
        listed = await self._management.queues(self._names.prefix)
        if listed is None:
            return None
        return {name: int(item.get("messages_unacknowledged") or 0) for name, item in listed.items()}

    async def _delayed(self, queue: str) -> int:
        return sum(count for _, count in await self._levels(queue))

    async def _levels(self, queue: str) -> list[tuple[int, int]]:
        """``(level, ready count)`` of the queue's delay levels holding messages."""
        if not await self._topology.has_levels(queue):
            return []
        out = []
        for k in range(LEVELS):
            counts = await self._conn.passive(self._names.level(queue, k))
            if counts is not None and counts.message_count:
                out.append((k, counts.message_count))
        return out

    async def list_queues(self) -> list[str]:
        candidates = self._topology.known() | self._leases.queues()
        if self._management is not None:
            listed = await self._management.queues(self._names.prefix) or {}
            candidates |= {queue for name in listed if (queue := self._names.queue_of(name)) is not None}
        busy = [s.queue for s in await self.queue_stats(sorted(candidates))
                if s.pending or s.delayed or s.dead or s.inflight or self._leases.count(s.queue)]
        return sorted(busy)

    # -- repairs --------------------------------------------------------------------

    async def requeue(self, queue: str, ids: set[str]) -> int:
        holds = self._leases.take_ids(queue, ids)
        await self._replace_holds(holds, [self._publisher.message(h.envelope, deliveries=h.deliveries, rank=True)
                                          for h in holds])
        now = utcnow()

        def ready_now(envelope: Envelope, deliveries: int) -> Outgoing:
            return self._publisher.message(Broker.ready_now_envelope(envelope, now), deliveries=deliveries, now=now)

        return len(holds) + await self._scan_levels(queue, ids, ready_now)

    async def remove(self, queue: str, ids: set[str]) -> int:
        holds = self._leases.take_ids(queue, ids)
        for hold in holds:
            await self._leases.ack(hold)
        found = {h.envelope.id for h in holds}
        count = len(holds) + await self._scan_levels(queue, ids, None, found)
        rest = ids - found
        if rest:
            count += await self._scan(self._names.work(queue), queue, rest, None, found, outrank=True)
        return count

    async def _replace_holds(self, holds: list[RabbitMQHold], messages: list[Outgoing]) -> None:
        try:
            await self._publisher.send(messages)
        except BaseException:
            for hold in holds:
                self._leases.restore(hold)
            raise
        for hold in holds:
            await self._leases.ack(hold)

    async def _scan_levels(self, queue: str, ids: set[str], replace: Replace | None, found: set[str] | None = None) -> int:
        count = 0
        for k, _ in await self._levels(queue):
            count += await self._scan(self._names.level(queue, k), queue, ids, replace, found)
        return count

    async def _scan(self, amqp_queue: str, queue: str, ids: set[str], replace: Replace | None, found: set[str] | None,
                    *, outrank: bool = False) -> int:
        """Settle the messages of ``ids`` in ``amqp_queue``: re-published through
        ``replace(envelope, deliveries)`` first when given, else dropped."""
        async with RabbitMQScan(self._conn) as scan:
            messages = await scan.take_all(amqp_queue, outrank=outrank)
            matched = []
            for message in messages:
                envelope, ok = codec.decode(message.body, "scan", queue)
                if ok and envelope.id in ids:
                    matched.append((message, envelope))
                elif outrank:
                    self._leases.handed_back(envelope.id)
            if replace is not None and matched:
                await self._publisher.send([replace(env, codec.header_int(m.header.properties.headers, codec.H_DELIVERIES))
                                            for m, env in matched])
            for message, envelope in matched:
                await scan.ack(message)
                if found is not None:
                    found.add(envelope.id)
            return len(matched)

    async def purge(self, queue: str) -> int:
        if await self._conn.passive(self._names.work(queue)) is None:
            return 0
        levels = await self._topology.has_levels(queue)
        targets = [self._names.work(queue)] + ([self._names.level(queue, k) for k in range(LEVELS)] if levels else [])
        count = 0
        channel = await self._conn.channel()
        try:
            for target in targets:
                count += (await channel.queue_purge(target)).message_count or 0
            if queue.startswith(REPLY_QUEUE_PREFIX):
                # A control reply queue is used once: deleted now, not ``x-expires`` later.
                await channel.queue_delete(self._names.work(queue))
                self._topology.forget(queue)
        except amqp.ChannelNotFoundEntity:
            pass  # deleted meanwhile (another purge): nothing left to count
        except Exception as exc:
            self._conn.fail(exc)
        finally:
            if not channel.is_closed:
                await channel.close()
        return count


__all__ = ["RabbitMQInspector"]
