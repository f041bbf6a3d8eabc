"""``SQSLeases``: the receipts this broker handed out, and the settle primitives.

A lease is SQS's visibility timeout. What SQS does not give is fencing: a receipt
handle stays usable after its lease expired, even once the message was received again
(SQS answers success and acts on the new copy). Stem fences by never handing out a
message whose lease ran out elsewhere:

* a message received with ``ApproximateReceiveCount > 1`` had a holder whose lease
  expired; the receiver *recycles* it (sends a copy as a new SQS message, then deletes
  the old one) instead of handing it out, so every old receipt handle now points at a
  deleted message: ``ack`` does nothing, ``extend_lease`` raises ``LeaseLost``;
* ``requeue``, ``_unclaim`` and ``nack`` recycle the same way, so the old receipt is void;
* the delivery count travels in the ``stem-deliveries`` attribute across copies.

A receipt whose lease is still running by our own clock (started before the receive
was sent, so it ends before the server's) settles directly. One whose lease may have
run out is first checked with a ``ChangeMessageVisibility`` (an error means the message
is gone), before ``nack`` or ``dead_letter`` send anything. The window left (a holder
settles in the instant another consumer received the expired message and before it
recycled it) can run the task twice, never lose it.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ...clock import monotonic, to_iso, utcnow
from ...envelope import Delivery, Envelope
from ...errors import LeaseLost
from .batch import SQSBatches
from .codec import ATTR_DEAD_AT, ATTR_META, ATTR_REASON, delay_until, outgoing
from .connection import QueueMissing
from .names import DEAD_KIND, band_kind
from .publish import SQSPublisher
from .queues import SQSQueues
from .url import MAX_VISIBILITY_S

# A lease this close to its end counts as possibly expired (the settle call still has
# to reach the server).
LEASE_SAFETY_S = 1.0
# The check before a late nack/dead_letter takes the message back for this long, enough
# for the send and delete that follow.
VERIFY_HOLD_S = 30
# What real SQS answers a visibility change of a message that is visible again.
NOT_IN_FLIGHT_CODES = frozenset({"MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"})
# Settled receipts remembered, so settling twice costs no request.
GONE_REMEMBERED = 20_000
# A receipt names its band queue: ``<kind>|<SQS receipt handle>``.
RECEIPT_SEP = "|"


@dataclass
class Lease:
    """One delivery this broker handed out. ``deadline`` is monotonic; ``base`` counts
    the deliveries made before this one."""

    url: str
    handle: str
    queue: str
    kind: str
    envelope: Envelope
    deadline: float
    base: int


def receipt_of(kind: str, handle: str) -> str:
    return f"{kind}{RECEIPT_SEP}{handle}"


class SQSLeases:
    """Receipts held by this broker and every way of settling one."""

    def __init__(self, queues: SQSQueues, batches: SQSBatches, publisher: SQSPublisher) -> None:
        self._queues = queues
        self._batches = batches
        self._publisher = publisher
        self._held: dict[str, Lease] = {}
        self._gone: OrderedDict[str, None] = OrderedDict()

    # -- bookkeeping ----------------------------------------------------------------

    def hold(self, receipt: str, lease: Lease) -> None:
        self._held[receipt] = lease

    def _forget(self, receipt: str) -> None:
        self._held.pop(receipt, None)
        self._gone[receipt] = None
        if len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)

    async def _lease(self, delivery: Delivery) -> Lease | None:
        """The lease behind ``delivery``; None when it is known to be settled or void. A
        receipt this broker did not hand out is treated as possibly expired."""
        receipt = delivery.receipt
        if receipt in self._gone:
            return None
        lease = self._held.get(receipt)
        if lease is not None:
            return lease
        kind, sep, handle = receipt.partition(RECEIPT_SEP)
        if not sep or not handle:
            return None
        url = await self._queues.find(delivery.queue, kind)
        if url is None:
            return None
        return Lease(url, handle, delivery.queue, kind, delivery.envelope, 0.0, max(0, delivery.delivery_count - 1))

    async def _still_ours(self, lease: Lease) -> bool:
        if lease.deadline - LEASE_SAFETY_S > monotonic():
            return True
        started = monotonic()
        code = await self.change(lease, VERIFY_HOLD_S)
        if code in NOT_IN_FLIGHT_CODES:
            # Real SQS: visible again and handed to nobody (a new receive would make it in
            # flight, a recycle would delete it), so this receipt may still settle it.
            return True
        if code is not None:
            return False
        lease.deadline = started + VERIFY_HOLD_S
        return True

    async def change(self, lease: Lease, seconds: int) -> str | None:
        try:
            return await self._batches.change_visibility(lease.url, lease.handle, seconds)
        except QueueMissing:
            return "QueueDoesNotExist"

    async def delete(self, lease: Lease) -> None:
        try:
            await self._batches.delete(lease.url, lease.handle)
        except QueueMissing:
            pass

    async def recycle(self, lease: Lease, envelope: Envelope, deliveries: int, delay: int | None = None) -> None:
        """Replace the message by a fresh copy of ``envelope`` (``deliveries`` counted so
        far), then delete it: every receipt of the old message is void from now on."""
        message = outgoing(envelope, deliveries=deliveries, delay=delay)
        await self._publisher.send(lease.queue, band_kind(envelope.priority), [message])
        await self.delete(lease)

    # -- settling -------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        lease = await self._lease(delivery)
        if lease is not None:
            await self.delete(lease)  # a stale handle deletes nothing: its message is gone
            self._forget(delivery.receipt)

    async def nack(self, delivery: Delivery, requeued: Envelope | None) -> None:
        lease = await self._lease(delivery)
        if lease is None:
            return
        if requeued is None:
            await self.delete(lease)
        elif await self._still_ours(lease):
            await self.recycle(lease, requeued, lease.base + 1, delay_until(requeued.not_before))
        self._forget(delivery.receipt)

    async def extend(self, delivery: Delivery, seconds: float) -> datetime:
        lease = await self._lease(delivery)
        if lease is None:
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        whole = min(MAX_VISIBILITY_S, math.ceil(seconds))
        started = monotonic()
        code = await self.change(lease, whole)  # any error code: the receipt no longer holds it
        if code == "InvalidParameterValue":
            raise LeaseLost(f"SQS refused to extend the lease of message {delivery.envelope.id}: a message stays "
                            "invisible at most 12 h after it was received")
        if code is not None:
            self._forget(delivery.receipt)
            raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")
        lease.deadline = started + seconds
        return utcnow() + timedelta(seconds=seconds)

    async def dead_letter(self, delivery: Delivery, reason: str, meta: dict[str, Any]) -> None:
        lease = await self._lease(delivery)
        if lease is None:
            return
        if await self._still_ours(lease):
            await self.bury(lease.queue, delivery.envelope, reason, meta)
            await self.delete(lease)
        self._forget(delivery.receipt)

    async def bury(self, queue: str, envelope: Envelope, reason: str, meta: dict[str, Any]) -> None:
        """Send ``envelope`` to ``queue``'s dead queue with its reason and meta attached."""
        extra = {ATTR_REASON: reason, ATTR_META: json.dumps(meta, separators=(",", ":"), default=str),
                 ATTR_DEAD_AT: to_iso(utcnow())}
        await self._publisher.send(queue, DEAD_KIND, [outgoing(envelope.replace(not_before=None), extra=extra, delay=0)])

    async def unclaim(self, delivery: Delivery) -> None:
        """Back to the queue as never handed out: ready now, not counted."""
        lease = await self._lease(delivery)
        if lease is not None:
            await self.recycle(lease, delivery.envelope, lease.base, delay=0)
            self._forget(delivery.receipt)

    # -- operator repairs of deliveries held here ------------------------------------

    def held_ids(self, queue: str, ids: set[str]) -> dict[str, list[str]]:
        """Receipts held (unsettled) here for each of ``ids`` in ``queue``."""
        found: dict[str, list[str]] = {}
        for receipt, lease in self._held.items():
            if lease.queue == queue and lease.envelope.id in ids:
                found.setdefault(lease.envelope.id, []).append(receipt)
        return found

    async def requeue_held(self, receipts: list[str]) -> int:
        """Make held deliveries ready now, their receipts void (the delivery counted)."""
        for receipt in receipts:
            lease = self._held[receipt]
            await self.recycle(lease, lease.envelope, lease.base + 1, delay=0)
            self._forget(receipt)
        return len(receipts)

    async def remove_held(self, receipts: list[str]) -> int:
        for receipt in receipts:
            await self.delete(self._held[receipt])
            self._forget(receipt)
        return len(receipts)


__all__ = ["LEASE_SAFETY_S", "Lease", "RECEIPT_SEP", "SQSLeases", "receipt_of"]
