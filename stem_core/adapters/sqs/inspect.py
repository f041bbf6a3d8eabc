"""``SQSInspector``: list_queues, queue_stats, requeue, remove and purge.

Counts come from SQS's approximate attributes (one ``GetQueueAttributes`` per band or
dead queue, whatever the queue length), so ``QueueStats.approximate`` is set and the
figures may lag by seconds: ``pending`` is ``ApproximateNumberOfMessages``, ``delayed``
``...Delayed``, ``inflight`` ``...NotVisible`` (summed over the bands), ``dead`` the
dead queue's visible and invisible messages. SQS keeps no age of its oldest message
(CloudWatch has it, per minute), so ``oldest_pending_age`` is None, and Stem keeps no
totals here.

What SQS cannot do, and what Stem does instead:

* peek: SQS has no look without a receive, and a receive takes the message; the
  ``peek`` capability is false.
* requeue / remove by id: SQS cannot address a message by id. Deliveries this process
  holds (a worker handing back its own work) are requeued or removed through their
  receipts; anything else raises ``Unsupported`` with that explanation.
* purge: the ready messages of every band are received and deleted (10 a request).
  Delayed messages stay: SQS hides them until due and nothing can reach them first.
"""

from __future__ import annotations

import asyncio
import logging

from ...contract.types import QueueStats
from ...settings import REPLY_QUEUE_PREFIX
from ...errors import Unsupported
from .batch import SQSBatches
from .connection import QueueMissing, SQSConnection
from .leases import SQSLeases
from .names import BAND_KINDS, DEAD_KIND
from .queues import LISTING_TTL_S, SQSQueues

log = logging.getLogger("stem.sqs")

COUNT_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
                    "ApproximateNumberOfMessagesNotVisible"]
STATS_CALLS_IN_PARALLEL = 16
PURGE_HOLD_S = 30
CONFIRM_WAIT_S = 1
IDS_SHOWN = 3


class SQSInspector:
    """Operator reads and repairs."""

    def __init__(self, conn: SQSConnection, queues: SQSQueues, leases: SQSLeases, batches: SQSBatches) -> None:
        self._conn = conn
        self._queues = queues
        self._leases = leases
        self._batches = batches

    async def list_queues(self) -> list[str]:
        """Every Stem queue with messages in any state (an empty SQS queue stays in SQS,
        so this reads the counts of each: one request per SQS queue)."""
        names = sorted((await self._queues.listing(LISTING_TTL_S)).queues)
        stats = await self.queue_stats(names)
        return [s.queue for s in stats if s.pending or s.delayed or s.inflight or s.dead]

    async def _counts(self, url: str, gate: asyncio.Semaphore) -> list[int]:
        """pending, delayed, in flight of one SQS queue (zeros when it is gone)."""
        async with gate:
            try:
                reply = await self._conn.sqs("get_queue_attributes", QueueUrl=url, AttributeNames=COUNT_ATTRIBUTES)
            except QueueMissing:
                self._queues.forget(url)
                return [0, 0, 0]
        attrs = reply.get("Attributes") or {}
        return [int(attrs.get(name) or 0) for name in COUNT_ATTRIBUTES]

    async def queue_stats(self, names: list[str]) -> list[QueueStats]:
        listing = await self._queues.listing(LISTING_TTL_S)
        gate = asyncio.Semaphore(STATS_CALLS_IN_PARALLEL)

        async def one(name: str) -> QueueStats:
            kinds = listing.queues.get(name, {})
            figures = await asyncio.gather(*(self._counts(url, gate) for url in kinds.values()))
            pending = delayed = inflight = dead = 0
            for kind, (ready, later, invisible) in zip(kinds, figures):
                if kind == DEAD_KIND:
                    dead += ready + later + invisible
                else:
                    pending, delayed, inflight = pending + ready, delayed + later, inflight + invisible
            return QueueStats(name, pending, delayed, inflight, dead, None, None, None, approximate=True)

        return list(await asyncio.gather(*(one(name) for name in names)))

    # -- repairs --------------------------------------------------------------------

    def _held(self, queue: str, ids: set[str], verb: str) -> list[str]:
        held = self._leases.held_ids(queue, ids)
        missing = sorted(ids - held.keys())
        if missing:
            shown = ", ".join(missing[:IDS_SHOWN]) + (f" and {len(missing) - IDS_SHOWN} more" if len(missing) > IDS_SHOWN else "")
            raise Unsupported(f"the sqs broker can {verb} only deliveries this process holds (SQS cannot reach a "
                              f"message by id); not held here: {shown}")
        return [receipt for receipts in held.values() for receipt in receipts]

    async def requeue(self, queue: str, ids: set[str]) -> int:
        return await self._leases.requeue_held(self._held(queue, ids, "requeue"))

    async def remove(self, queue: str, ids: set[str]) -> int:
        return await self._leases.remove_held(self._held(queue, ids, "remove"))

    async def purge(self, queue: str) -> int:
        """Receive and delete every ready message of ``queue``'s bands; returns how many.
        A control reply queue (used once) is deleted too once it is empty, so control
        commands leave no SQS queue behind."""
        listing = await self._queues.listing(LISTING_TTL_S)
        kinds = dict(listing.queues.get(queue, {}))
        total = 0
        for kind, url in kinds.items():
            if kind in BAND_KINDS:
                total += await self._drain(url)
        if queue.startswith(REPLY_QUEUE_PREFIX) and kinds:
            gate = asyncio.Semaphore(STATS_CALLS_IN_PARALLEL)
            counts = await asyncio.gather(*(self._counts(url, gate) for url in kinds.values()))
            if not any(sum(figures) for figures in counts):
                for url in kinds.values():
                    await self._delete_queue(url)
        return total

    async def _delete_queue(self, url: str) -> None:
        try:
            await self._conn.sqs("delete_queue", QueueUrl=url)
        except QueueMissing:
            pass
        self._queues.forget(url)

    async def _drain(self, url: str) -> int:
        count = 0
        try:
            attrs = await self._conn.sqs("get_queue_attributes", QueueUrl=url, AttributeNames=COUNT_ATTRIBUTES[:1])
            expected = int((attrs.get("Attributes") or {}).get(COUNT_ATTRIBUTES[0]) or 0)
            confirming = False
            while True:
                # Short polls sample SQS's servers: an empty answer before the expected count
                # is confirmed by one long poll, which asks them all.
                wait = CONFIRM_WAIT_S if confirming else 0
                reply = await self._conn.sqs("receive_message", wait=wait, QueueUrl=url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=PURGE_HOLD_S, WaitTimeSeconds=wait)
                handles = [m["ReceiptHandle"] for m in reply.get("Messages") or []]
                if not handles:
                    if confirming or count >= expected:
                        return count
                    confirming = True
                    continue
                confirming = False
                codes = await asyncio.gather(*(self._batches.delete(url, h) for h in handles))
                count += sum(1 for code in codes if code is None)
        except QueueMissing:
            self._queues.forget(url)
            return count


__all__ = ["SQSInspector"]
