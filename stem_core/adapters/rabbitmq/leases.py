"""``RabbitMQLeases``: Stem's leases mapped onto AMQP's unacknowledged deliveries.

AMQP holds a delivery for its consumer until it is acked or rejected, or until the
channel it came on closes (the process died, its heartbeat stopped, RabbitMQ's
``consumer_timeout`` fired): then the server puts it back and redelivers it with the
``redelivered`` flag. So a lease *is* an unacked delivery, and:

* a receipt names one delivery on one channel of this broker object (``hold``); it is
  valid while that delivery is unsettled and its channel open. Settling removes it, so
  a second settle, or a settle after the message was taken back, touches nothing: a
  stale holder can never ack a redelivered copy (fencing), and Stem never acks a
  delivery tag twice (which would close the channel and requeue everything on it);
* ``extend_lease`` moves the deadline without any round trip: the server keeps holding;
* when a lease runs out, this process takes the message back itself (re-published with
  its delivery count, then the old delivery acked), so another consumer gets it within
  lease + ``LEASE_CHECK_S`` + one round trip. It does so only once some consumer could
  take it (the queue has a consumer), so a late holder whose message nobody wanted in
  the meantime still settles it, as the contract says; a renewal that lands while it
  asks the server keeps the message where it is;
* a process that dies, or whose event loop hangs past about two AMQP heartbeats, loses
  its connection: the server requeues its deliveries at once (no wait for the lease).
  A settle is a frame queued for aiormq's writer, with no reply; when the connection was
  reset under a frozen process, that queue can be full with its writer gone, and the
  write would wait for ever (the worker then never finishes, nor stops on SIGTERM). So
  a settle gives up after ``SETTLE_TIMEOUT_S`` with a warning: the server took the
  message back with the connection (or, should the connection only be stalled, when its
  channel closes), so the task may run again, never lost.

Delivery counts: a message carries the deliveries before its last re-publish
(``x-stem-deliveries``); this delivery is one more, and one more again when RabbitMQ
redelivered it, except when this process knows it handed that copy back unused (a
prefetched message never given to the consumer, or one held by an operator's scan).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Callable, Protocol

from aiormq.abc import AbstractChannel, DeliveredMessage

from ...clock import monotonic, utcnow
from ...envelope import Delivery, Envelope
from ...errors import LeaseLost, StemError
from . import codec
from .connection import TRANSIENT, RabbitMQConnection, close_quietly
from .names import RabbitMQNames
from .publish import RabbitMQPublisher

log = logging.getLogger("stem.rabbitmq")

# An expired lease nobody could take yet is checked again this often.
LEASE_CHECK_S = 0.25
# A settle frame still not written after this long is given up (see above).
SETTLE_TIMEOUT_S = 5.0
# Envelope ids remembered as "handed back unused" (oldest forgotten first).
UNUSED_MEMORY = 10_000


class HoldOwner(Protocol):
    """The subscription a hold came from: told when one of its deliveries is settled."""

    def released(self, channel: AbstractChannel) -> None: ...


class RabbitMQHold:
    """One unsettled delivery this broker object handed out."""

    __slots__ = ("receipt", "envelope", "queue", "channel", "tag", "deliveries", "holder", "deadline", "owner")

    def __init__(self, receipt: str, envelope: Envelope, queue: str, channel: AbstractChannel, tag: int,
                 deliveries: int, holder: str, deadline: float, owner: HoldOwner) -> None:
        self.receipt = receipt
        self.envelope = envelope
        self.queue = queue
        self.channel = channel
        self.tag = tag
        self.deliveries = deliveries
        self.holder = holder
        self.deadline = deadline
        self.owner = owner


class RabbitMQLeases:
    """Every hold of one broker object, their deadlines, and the keeper that ends them."""

    def __init__(self, conn: RabbitMQConnection, names: RabbitMQNames, publisher: RabbitMQPublisher,
                 lease_for: Callable[[Envelope], float]) -> None:
        self._conn = conn
        self._names = names
        self._publisher = publisher
        self._lease_for = lease_for
        self._holds: dict[str, RabbitMQHold] = {}
        self._by_id: dict[tuple[str, str], set[str]] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._unused: OrderedDict[str, int] = OrderedDict()
        self._wake = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        # Channels being closed after a settle could not be written (``_abandon``).
        self._closing: set[asyncio.Task[None]] = set()

    # -- handing out ----------------------------------------------------------------

    def hold(self, message: DeliveredMessage, envelope: Envelope, queue: str, holder: str, owner: HoldOwner) -> Delivery:
        """Record ``message`` as handed out and return its ``Delivery``."""
        seconds = self._lease_for(envelope)
        count = codec.header_int(message.header.properties.headers, codec.H_DELIVERIES) + 1
        if message.redelivered and not self._used_up(envelope.id):
            count += 1
        receipt = f"{self._prefix}:{next(self._seq)}"
        hold = RabbitMQHold(receipt, envelope, queue, message.channel, message.delivery_tag or 0, count, holder,
                            monotonic() + seconds, owner)
        self._holds[receipt] = hold
        self._by_id.setdefault((queue, envelope.id), set()).add(receipt)
        self._arm(hold)
        return Delivery(envelope=envelope, receipt=receipt, queue=queue,
                        lease_expires_at=utcnow() + timedelta(seconds=seconds), delivery_count=count)

    def handed_back(self, envelope_id: str) -> None:
        """``envelope_id`` goes back unused: its redelivery is not one more delivery."""
        self._unused[envelope_id] = self._unused.get(envelope_id, 0) + 1
        self._unused.move_to_end(envelope_id)
        while len(self._unused) > UNUSED_MEMORY:
            self._unused.popitem(last=False)

    def was_handed_back(self, envelope_id: str) -> bool:
        """True when a redelivery of ``envelope_id`` is one this process handed back unused
        (it does not count as a delivery; ``hold`` uses the mark up)."""
        return bool(self._unused.get(envelope_id))

    def _used_up(self, envelope_id: str) -> bool:
        left = self._unused.get(envelope_id)
        if not left:
            return False
        if left == 1:
            del self._unused[envelope_id]
        else:
            self._unused[envelope_id] = left - 1
        return True

    # -- settling -------------------------------------------------------------------

    def take(self, receipt: str) -> RabbitMQHold | None:
        """Remove and return the hold of ``receipt``; None when it is stale (settled, taken
        back, or its channel closed so the server already took the message back)."""
        hold = self._holds.pop(receipt, None)
        if hold is None:
            return None
        self._forget(hold)
        if hold.channel.is_closed:
            hold.owner.released(hold.channel)
            return None
        return hold

    def restore(self, hold: RabbitMQHold) -> None:
        """Undo ``take`` (a settle that could not finish keeps its lease)."""
        if hold.channel.is_closed:
            hold.owner.released(hold.channel)
            return
        self._holds[hold.receipt] = hold
        self._by_id.setdefault((hold.queue, hold.envelope.id), set()).add(hold.receipt)
        self._arm(hold)

    def take_ids(self, queue: str, ids: set[str]) -> list[RabbitMQHold]:
        """Remove and return the live holds of ``ids`` in ``queue`` (requeue, remove)."""
        found = []
        for envelope_id in ids:
            for receipt in list(self._by_id.get((queue, envelope_id), ())):
                hold = self.take(receipt)
                if hold is not None:
                    found.append(hold)
        return found

    def _forget(self, hold: RabbitMQHold) -> None:
        key = (hold.queue, hold.envelope.id)
        receipts = self._by_id.get(key)
        if receipts is not None:
            receipts.discard(hold.receipt)
            if not receipts:
                del self._by_id[key]

    async def ack(self, hold: RabbitMQHold) -> None:
        await self._settle(hold, "ack")

    async def reject(self, hold: RabbitMQHold) -> None:
        await self._settle(hold, "reject")

    async def give_back(self, hold: RabbitMQHold) -> None:
        """Back to its place in the queue, unused (nack with requeue)."""
        self.handed_back(hold.envelope.id)
        await self._settle(hold, "requeue")

    async def _settle(self, hold: RabbitMQHold, how: str) -> None:
        channel = hold.channel
        try:
            if not channel.is_closed:
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    if how == "ack":
                        await channel.basic_ack(hold.tag, wait=False)
                    elif how == "reject":
                        await channel.basic_reject(hold.tag, requeue=False, wait=False)
                    else:
                        await channel.basic_nack(hold.tag, requeue=True, wait=False)
        except TimeoutError:
            log.warning("could not %s message %s within %.0f s (the connection is gone or stalled); closing its channel, "
                        "so RabbitMQ takes back what it held there (those tasks may run again)", how, hold.envelope.id,
                        SETTLE_TIMEOUT_S)
            self._abandon(channel)
        except TRANSIENT as exc:
            # The channel died first: the server has taken the message back already.
            log.debug("settling %s on a closed channel: %s", hold.envelope.id, exc)
        finally:
            hold.owner.released(channel)

    def _abandon(self, channel: AbstractChannel) -> None:
        """Close a channel a settle could not be written to (in the background, bounded):
        an unsettled delivery would otherwise take one of its prefetch slots for as long as
        it lives; the subscription opens a new channel on its next receive."""
        task = asyncio.get_running_loop().create_task(close_quietly(channel, SETTLE_TIMEOUT_S))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def extend(self, receipt: str, seconds: float) -> datetime:
        hold = self._holds.get(receipt)
        if hold is None or hold.channel.is_closed:
            raise LeaseLost(f"lease of message {receipt} is no longer held by this receipt")
        hold.deadline = monotonic() + seconds
        self._arm(hold)
        return utcnow() + timedelta(seconds=seconds)

    def queues(self) -> set[str]:
        return {hold.queue for hold in self._holds.values()}

    def count(self, queue: str) -> int:
        return sum(1 for hold in self._holds.values() if hold.queue == queue and not hold.channel.is_closed)

    # -- expiry ---------------------------------------------------------------------

    def _arm(self, hold: RabbitMQHold) -> None:
        heapq.heappush(self._deadlines, (hold.deadline, next(self._seq), hold.receipt))
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
        elif self._deadlines[0][2] == hold.receipt:
            self._wake.set()

    async def stop(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
        self._holds.clear()
        self._by_id.clear()
        self._deadlines.clear()

    async def _keep(self) -> None:
        while self._deadlines:
            now = monotonic()
            expired: list[RabbitMQHold] = []
            while self._deadlines and self._deadlines[0][0] <= now:
                deadline, _, receipt = heapq.heappop(self._deadlines)
                hold = self._holds.get(receipt)
                if hold is not None and hold.deadline == deadline:
                    expired.append(hold)
            if expired:
                try:
                    await self._expire(expired)
                except StemError as exc:
                    log.warning("could not take back %d expired leases: %s", len(expired), exc)
                    for hold in expired:
                        if hold.receipt in self._holds:
                            hold.deadline = monotonic() + LEASE_CHECK_S
                            heapq.heappush(self._deadlines, (hold.deadline, next(self._seq), hold.receipt))
                continue
            if not self._deadlines:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(max(0.0, self._deadlines[0][0] - monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _expire(self, expired: list[RabbitMQHold]) -> None:
        wanted: dict[str, bool] = {}
        for hold in expired:
            if hold.queue not in wanted:
                counts = await self._conn.passive(self._names.work(hold.queue))
                wanted[hold.queue] = counts is not None and counts.consumer_count > 0
            if not wanted[hold.queue]:
                # Nobody could take it: keep holding, so a late settle still counts.
                hold.deadline = monotonic() + LEASE_CHECK_S
                heapq.heappush(self._deadlines, (hold.deadline, next(self._seq), hold.receipt))
                continue
            if hold.deadline > monotonic():
                # Renewed while this keeper waited for the server (the holder's renewal and
                # this expiry came due together, after a busy event loop): it stays held,
                # as a renewal on any other broker would have kept it; its new deadline is armed.
                continue
            taken = self.take(hold.receipt)
            if taken is None:
                continue
            try:
                await self._publisher.send([self._publisher.message(taken.envelope, deliveries=taken.deliveries, rank=True)])
            except StemError:
                await self._settle(taken, "requeue")  # the server puts it back instead
                raise
            await self.ack(taken)


__all__ = ["LEASE_CHECK_S", "SETTLE_TIMEOUT_S", "RabbitMQHold", "RabbitMQLeases"]
