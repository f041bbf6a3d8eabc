"""The ``Broker`` contract. Read this first: every adapter implements exactly this.

Rules every adapter must keep (the contract suite in ``tests/contract/`` checks each):

Producing
  * ``publish`` persists the envelope before returning (durably, for that broker's
    notion of durable). ``queue``/``priority`` arguments override the envelope's, and
    the *stored* envelope carries the effective values. A ``not_before`` in the future
    keeps the message invisible (and out of ``pending``) until then.
  * ``publish_many`` is the batch fast path: one round trip or one transaction where
    the server allows, all-or-nothing where it can.
  * ``broadcast`` gives **every** consumer subscribed to the channel at publish time its
    own copy, across processes (``cross_process`` brokers) and machines.

Consuming
  * One ``consume`` subscription spans several queues and broadcast channels. Across the
    queues of a subscription, higher priority wins, then the oldest (by ``not_before``
    or enqueue time).
  * ``prefetch`` is a real cap: a subscription never holds more than ``prefetch``
    unsettled *queue* deliveries (broadcast deliveries do not count). The base class
    enforces it; adapters never return more than the ``limit`` they are asked for.
  * Breaking out of the iterator stops fetching; deliveries already handed out keep
    their leases until acked, nacked, dead-lettered or expired. Deliveries claimed in
    the same batch but not yet handed out go back at once (``_unclaim``), no attempt
    counted.
  * A lease lasts the envelope's ``visibility_timeout``, else the broker default
    (``lease_seconds``, 30 s). An unsettled message whose lease expired becomes
    deliverable again to any consumer, with ``delivery_count + 1``, within lease + 1 s.
  * Receipts fence: once a message has been redelivered or requeued, settling it with
    an older receipt changes nothing (``ack``/``nack``/``dead_letter`` are silent
    no-ops, ``extend_lease`` raises ``LeaseLost``). A receipt whose lease expired but
    whose message was not yet handed to anyone else still settles it.
  * ``ack``: never delivered again. ``nack(requeue=True, delay=None)``: deliverable
    again (after ``delay`` seconds if given) with ``attempt + 1``; ``requeue=False``
    drops it. ``dead_letter``: removed from the queue and kept as a ``DeadLetterEntry``
    under the delivery's queue. For broadcast deliveries all three simply settle it.
  * ``extend_lease(delivery, seconds)`` moves the deadline to now + seconds without
    re-publishing or duplicating anything.

Inspecting and repairing
  * ``queue_stats`` reads counters, never scans messages: its cost does not grow with
    queue length. ``pending`` is ready now, ``delayed`` waits for ``not_before``,
    ``inflight`` is leased, ``dead`` is dead letters.
  * ``requeue(queue, ids)`` makes leased or delayed messages ready now (fencing the old
    holder); ``remove`` deletes messages in any live state; ``purge`` deletes pending
    and delayed ones (not in-flight, not dead letters).
  * Dead letters list newest first; replay takes oldest first, keeps the envelope id,
    resets ``attempt`` to 0 (a fresh retry budget), and records the replay in
    ``meta["stem.replayCount"]`` / ``meta["stem.replayedAt"]``. A dry run changes nothing.
  * Names are validated (``validate_name``) before they reach any key or statement.

Signing (``stem_core.signing``): when this process has a signing key, every envelope is
signed here, after the overrides that change it: ``route`` (publish, publish_many,
enqueue), ``broadcast``, and the copies adapters store instead of the original
(``requeued_envelope``, ``replayed_envelope``, ``ready_now_envelope``). An adapter that
rewrites a signed field any other way must go through one of these.

Errors: adapters raise only ``stem_core.errors`` types; driver exceptions are
translated at the adapter boundary (connection problems -> ``BrokerUnavailable``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, ClassVar, Iterable, Sequence

from ..clock import to_iso, utcnow
from ..envelope import MAX_PRIORITY, MIN_PRIORITY, Delivery, Envelope, delay_to_not_before, validate_name
from ..errors import ConfigurationError, InvalidEnvelope, StemError, Unsupported
from ..limits import MAX_BATCH_LIMIT, MAX_CURSOR_LENGTH, MAX_PAGE_OFFSET, check_int, check_page
from ..settings import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_NAMESPACE,
    DEFAULT_PAGE_LIMIT,
    dead_letter_retention_seconds,
    max_envelope_bytes,
    validate_namespace,
)
from ..signing import CURRENT, Signer, current, resign, sign_if_able
from .backend import ResultBackend, StatusWrite
from .types import Capabilities, DeadLetterEntry, DeadLetterPage, MessageInfo, MessagePage, QueueStats, ReplayResult, TaskState

# One adapter ``_receive`` call blocks at most this long, so a closed iterator or a
# cancelled consumer is noticed promptly.
RECEIVE_WAIT_SECONDS = 1.0
# While a subscription is at its prefetch cap it re-checks broadcasts this often.
FULL_WAIT_SECONDS = 0.1
PEEK_STATES = ("pending", "delayed", "inflight")
REPLAY_COUNT_META = "stem.replayCount"
REPLAYED_AT_META = "stem.replayedAt"

log = logging.getLogger("stem.broker")


def raise_if_cancelled() -> None:
    """For adapters' receive loops: re-raise a cancellation a driver swallowed.

    On Python 3.11 ``asyncio.wait_for`` (redis-py and psycopg_pool use it inside) drops a
    cancel that lands as its inner wait completes; the task still counts the request
    (``Task.cancelling()``), so a loop checks before it goes round again instead of
    running on after its caller gave up on it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def default_consumer_name() -> str:
    """``<hostname>-<pid>-<4 hex>``: unique per subscription, readable in ``peek``."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class Subscription:
    """One ``consume`` call's state. Adapters may keep their own data in ``state``."""

    __slots__ = ("queues", "channels", "consumer", "prefetch", "refill", "outstanding", "slot_freed", "state")

    def __init__(self, queues: tuple[str, ...], channels: tuple[str, ...], consumer: str, prefetch: int,
                 refill: int = 1) -> None:
        self.queues = queues
        self.channels = channels
        self.consumer = consumer
        self.prefetch = prefetch
        self.refill = refill
        self.outstanding: set[str] = set()
        self.slot_freed = asyncio.Event()
        self.state: Any = None


class Broker(ABC):
    """Abstract async broker. Public methods validate and keep the policy; adapters
    implement the ``_underscored`` primitives."""

    capabilities: ClassVar[Capabilities]
    scheme: ClassVar[str] = ""
    # How many messages one receive request of this server can return (SQS: 10 per
    # ReceiveMessage). A worker given no prefetch holds at least this many, so one request
    # claims a full batch instead of paying a request per message or two.
    claim_batch: ClassVar[int] = 1

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.namespace = validate_namespace(namespace)
        if not lease_seconds > 0:
            raise ConfigurationError(f"lease_seconds must be positive, got {lease_seconds!r}")
        self.lease_seconds = float(lease_seconds)
        # Checked on every publish (``route``) and broadcast: a bigger envelope is refused.
        self.max_envelope_bytes = max_envelope_bytes()
        # Dead letters older than this are deleted as new ones are written (in bounded
        # batches; SQS: the dead queue's own retention). Read here, so adapters pass it to
        # the parts they build after this.
        self.dead_letter_retention = dead_letter_retention_seconds()
        self._holders: dict[str, Subscription] = {}

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "Broker":
        """An unconnected adapter for ``url``; URL query parameters and ``options`` tune it.
        Unknown options raise ``ConfigurationError``."""

    async def connect(self) -> "Broker":
        """Open connections (and create schema where needed). Idempotent."""
        return self

    @abstractmethod
    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def ping(self) -> None:
        """One cheap round trip to the server; raises ``BrokerUnavailable`` when down."""
        await self.list_queues()

    async def __aenter__(self) -> "Broker":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- producing ------------------------------------------------------------------

    def route(self, envelope: Envelope, queue: str | None = None, priority: int | None = None, *,
              signer: Signer | None = CURRENT) -> Envelope:
        """The envelope as it will be stored: overrides applied and validated, then signed
        when this process signs (``signer``: the one a batch looked up once, see
        ``route_all``)."""
        if not isinstance(envelope, Envelope):
            raise InvalidEnvelope(f"expected an Envelope, got {type(envelope).__name__}")
        changes: dict[str, Any] = {}
        if queue is not None and queue != envelope.queue:
            changes["queue"] = validate_name(queue)
        if priority is not None and priority != envelope.priority:
            if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
                raise ValueError(f"priority must be an integer {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority!r}")
            changes["priority"] = priority
        routed = sign_if_able(envelope.replace(**changes) if changes else envelope, signer)
        routed.check_size(self.max_envelope_bytes)
        return routed

    async def publish(self, envelope: Envelope, *, queue: str | None = None, priority: int | None = None) -> None:
        """Persist one envelope (see the module rules)."""
        await self._publish([self.route(envelope, queue, priority)])

    def route_all(self, envelopes: Iterable[Envelope]) -> list[Envelope]:
        """``route`` for each of a batch, with one signer lookup for all of them."""
        signer = current()
        return [self.route(env, signer=signer) for env in envelopes]

    async def publish_many(self, envelopes: Iterable[Envelope]) -> None:
        """Persist many envelopes in one round trip or transaction where possible."""
        batch = self.route_all(envelopes)
        if batch:
            await self._publish(batch)

    # -- with a result backend: the app's enqueue, the worker's settle ----------------

    async def enqueue(self, envelopes: Iterable[Envelope], backend: ResultBackend) -> None:
        """``Stem.enqueue``/``enqueue_many``: write each envelope's ``queued`` status to
        ``backend``, then publish the envelopes.

        The statuses go first, so a fast worker's ``running`` is never overwritten by a
        late ``queued``. When ``backend`` lives on this broker's server, the adapter does
        both in one round trip (``_enqueue_with``), statuses still first."""
        batch = self.route_all(envelopes)
        if not batch:
            return
        # Built directly, not through prepare_status: every value comes from a validated
        # envelope (JSON-safe by construction), and this runs once per enqueued task.
        ttl = backend.result_ttl
        writes = [StatusWrite(env.id, TaskState.QUEUED, None, None, env.attempt, queued_meta(env), ttl)
                  for env in batch if not env.ignores_result]
        if not writes:  # every task ignores its result: nothing to store first
            await self._publish(batch)
            return
        if await self._enqueue_with(backend, batch, writes):
            return
        if len(writes) > 1 and all(w.attempt == 0 for w in writes):
            await backend.set_statuses([(w.task_id, w.state, w.meta) for w in writes])  # the batch form: attempt 0
        else:
            for write in writes:
                await backend.write_status(write)
        await self._publish(batch)

    async def ack_with_status(
        self,
        delivery: Delivery,
        backend: ResultBackend,
        state: TaskState | str,
        *,
        payload: Any = None,
        error: Any = None,
        attempt: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """The worker's settle step: write the final status, then ack (see ``ack``).

        ``ValueError`` (payload or meta not JSON) is raised before anything is written.
        One round trip when ``backend`` shares this broker's server (``_ack_with``)."""
        write = backend.prepare_status(delivery.envelope.id, state, payload=payload, error=error, attempt=attempt, meta=meta)
        if delivery.channel is None:
            try:
                done = await self._ack_with(delivery, backend, write)
            except BaseException:
                self._release(delivery)  # as ack does: the slot is never leaked
                raise
            if done:
                self._release(delivery)
                return
        await backend.write_status(write)
        await self.ack(delivery)

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        """Fan out: every consumer subscribed to ``channel`` now gets its own copy."""
        validate_name(channel, kind="channel")
        if not isinstance(envelope, Envelope):
            raise InvalidEnvelope(f"expected an Envelope, got {type(envelope).__name__}")
        if not self.capabilities.broadcast:
            raise Unsupported(f"the {self.scheme} broker does not support broadcast")
        signed = sign_if_able(envelope)
        signed.check_size(self.max_envelope_bytes)
        await self._broadcast(channel, signed)

    # -- consuming ------------------------------------------------------------------

    def consume(
        self,
        queues: Sequence[str] | str,
        *,
        prefetch: int = 1,
        consumer: str | None = None,
        channels: Sequence[str] = (),
        refill: int = 1,
    ) -> AsyncIterator[Delivery]:
        """Deliveries from ``queues`` and broadcast ``channels``; see the module rules.

        ``refill``: while the subscription holds deliveries, claim again only once at
        least this many prefetch slots are free (1..prefetch; a worker passes half its
        prefetch so one claim round trip serves several tasks). With nothing held it
        always claims. Arguments are checked now (``ValueError``), not on the first
        iteration.
        """
        if isinstance(queues, str):
            queues = [queues]
        if isinstance(channels, str):
            channels = [channels]
        qs = tuple(dict.fromkeys(validate_name(q) for q in queues))
        chs = tuple(dict.fromkeys(validate_name(c, kind="channel") for c in channels))
        if not qs and not chs:
            raise ValueError("consume needs at least one queue or broadcast channel")
        if chs and not self.capabilities.broadcast:
            raise Unsupported(f"the {self.scheme} broker does not support broadcast channels")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        if isinstance(refill, bool) or not isinstance(refill, int) or not 1 <= refill <= prefetch:
            raise ValueError(f"refill must be an integer 1..prefetch ({prefetch}), got {refill!r}")
        name = consumer or default_consumer_name()
        if len(name) > 200:
            raise ValueError("consumer name must be at most 200 characters")
        return self._consume_loop(Subscription(qs, chs, name, prefetch, refill))

    async def _consume_loop(self, sub: Subscription) -> AsyncIterator[Delivery]:
        await self._open_subscription(sub)
        # The last claimed batch and how many of it were handed out: a consumer that stops
        # mid-batch (prefetch > 1) leaves the rest claimed, and they must go back now.
        batch: list[Delivery] = []
        handed = 0
        try:
            while True:
                room = sub.prefetch - len(sub.outstanding) if sub.queues else 0
                if sub.queues and room < (sub.refill if sub.outstanding else 1):
                    if sub.channels:
                        for delivery in await self._receive(sub, 0, 0.0):
                            yield delivery
                    sub.slot_freed.clear()
                    if sub.prefetch - len(sub.outstanding) < (sub.refill if sub.outstanding else 1):
                        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                        # cancel that lands as the event fires, and the consumer never stops.
                        try:
                            async with asyncio.timeout(FULL_WAIT_SECONDS):
                                await sub.slot_freed.wait()
                        except TimeoutError:
                            pass
                    continue
                batch, handed = await self._receive(sub, room, RECEIVE_WAIT_SECONDS), 0
                for delivery in batch:
                    handed += 1  # counted before the yield: it is handed out even if we stop there
                    if delivery.channel is None:
                        sub.outstanding.add(delivery.receipt)
                        self._holders[delivery.receipt] = sub
                    yield delivery
        finally:
            unhanded = [d for d in batch[handed:] if d.channel is None]
            try:
                if unhanded:
                    await self._unclaim(unhanded)
            except StemError as exc:
                log.warning("could not hand back %d claimed deliveries (%s); they return when their leases expire",
                            len(unhanded), exc)
            finally:
                await self._close_subscription(sub)

    def _release(self, delivery: Delivery) -> None:
        sub = self._holders.pop(delivery.receipt, None)
        if sub is not None:
            sub.outstanding.discard(delivery.receipt)
            sub.slot_freed.set()

    async def ack(self, delivery: Delivery) -> None:
        """Settle: the message is never delivered again."""
        try:
            await self._ack(delivery)
        finally:
            self._release(delivery)

    async def nack(self, delivery: Delivery, *, requeue: bool = True, delay: float | timedelta | None = None) -> None:
        """Give the message back (``attempt + 1``, after ``delay``) or drop it (``requeue=False``)."""
        seconds = _seconds(delay)
        try:
            await self._nack(delivery, requeue=requeue, delay=seconds)
        finally:
            self._release(delivery)

    async def extend_lease(self, delivery: Delivery, seconds: float | timedelta) -> datetime:
        """Move the lease deadline to now + ``seconds``; returns the new deadline.

        Raises ``LeaseLost`` when the receipt no longer holds the message.
        """
        value = _seconds(seconds)
        if value is None or value <= 0:
            raise ValueError(f"lease extension must be positive seconds, got {seconds!r}")
        if not self.capabilities.lease_extension:
            raise Unsupported(f"the {self.scheme} broker cannot extend leases")
        if delivery.channel is not None:
            return utcnow() + timedelta(seconds=value)
        return await self._extend_lease(delivery, value)

    async def dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any] | None = None) -> None:
        """Remove from the live queue and keep a ``DeadLetterEntry`` under the delivery's queue."""
        if not isinstance(reason, str) or not reason:
            raise ValueError("dead_letter needs a non-empty reason")
        try:
            await self._dead_letter(delivery, reason=reason, meta=dict(meta or {}))
        finally:
            self._release(delivery)

    # -- inspecting and repairing ---------------------------------------------------

    @abstractmethod
    async def list_queues(self) -> list[str]:
        """Every queue with messages in any state (dead letters included), sorted."""

    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue (all known queues when ``queues`` is None), in the order asked."""
        names = await self.list_queues() if queues is None else [validate_name(q) for q in queues]
        if not names:
            return []
        return await self._queue_stats(list(dict.fromkeys(names)))

    async def peek(self, queue: str, *, state: str = "pending", limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> list[MessageInfo]:
        """Messages of one state without claiming them; pending in delivery order."""
        validate_name(queue)
        if state not in PEEK_STATES:
            raise ValueError(f"state must be one of {', '.join(PEEK_STATES)}, got {state!r}")
        _check_page(limit, offset)
        if not self.capabilities.peek:
            raise Unsupported(f"the {self.scheme} broker cannot peek at messages")
        return await self._peek(queue, state, limit, offset)

    async def peek_page(self, queue: str, *, state: str = "pending", limit: int = DEFAULT_PAGE_LIMIT,
                        cursor: str | None = None) -> MessagePage:
        """One page of ``peek`` from ``cursor`` (None: the start); page on with the
        returned ``next_cursor``. Unlike an offset, a cursor costs the same however deep
        it is: the way to walk a long queue."""
        validate_name(queue)
        if state not in PEEK_STATES:
            raise ValueError(f"state must be one of {', '.join(PEEK_STATES)}, got {state!r}")
        check_page(limit, 0)
        if cursor is not None and (not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LENGTH):
            raise ValueError(f"cursor must be a next_cursor of an earlier page, got {str(cursor)[:40]!r}")
        if not self.capabilities.peek:
            raise Unsupported(f"the {self.scheme} broker cannot peek at messages")
        return await self._peek_page(queue, state, limit, cursor)

    async def requeue(self, queue: str, ids: Iterable[str]) -> int:
        """Make leased or delayed messages ready now; returns how many changed."""
        validate_name(queue)
        wanted = _ids(ids)
        return await self._requeue(queue, wanted) if wanted else 0

    async def remove(self, queue: str, ids: Iterable[str]) -> int:
        """Delete messages in any live state; returns how many were removed."""
        validate_name(queue)
        wanted = _ids(ids)
        return await self._remove(queue, wanted) if wanted else 0

    async def purge(self, queue: str) -> int:
        """Delete pending and delayed messages; returns how many."""
        return await self._purge(validate_name(queue))

    async def list_dead_letters(self, queue: str, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> DeadLetterPage:
        """One page of dead letters, newest first."""
        validate_name(queue)
        _check_page(limit, offset)
        return await self._list_dead_letters(queue, limit, offset)

    async def get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        """The dead letter of envelope ``id`` in ``queue``, or None."""
        validate_name(queue)
        return await self._get_dead_letter(queue, id)

    async def replay_dead_letters(
        self,
        queue: str,
        *,
        limit: int = DEFAULT_PAGE_LIMIT,
        since: datetime | None = None,
        delay: float | timedelta | None = None,
        dry_run: bool = False,
        ids: Iterable[str] | None = None,
        task: str | None = None,
    ) -> ReplayResult:
        """Move up to ``limit`` matching dead letters (oldest first) back onto ``queue``."""
        validate_name(queue)
        check_int(limit, "limit", 0, MAX_BATCH_LIMIT)
        wanted = _ids(ids) if ids is not None else None
        return await self._replay_dead_letters(
            queue, limit=limit, since=since, delay=_seconds(delay), dry_run=dry_run, ids=wanted, task=task
        )

    async def purge_dead_letters(self, queue: str, *, since: datetime | None = None, limit: int | None = None) -> int:
        """Delete dead letters (``dead_at >= since``, oldest first up to ``limit``); returns how many."""
        validate_name(queue)
        if limit is not None:
            check_int(limit, "limit", 0, MAX_BATCH_LIMIT)
        return await self._purge_dead_letters(queue, since=since, limit=limit)

    # -- policy helpers for adapters ------------------------------------------------

    def lease_for(self, envelope: Envelope) -> float:
        """Lease length in seconds for this envelope."""
        return envelope.visibility_timeout or self.lease_seconds

    @staticmethod
    def requeued_envelope(envelope: Envelope, delay: float | None) -> Envelope:
        """The envelope ``nack(requeue=True, delay=...)`` stores: ``attempt + 1``, and
        ``not_before`` now + ``delay`` when a positive delay is given."""
        changes: dict[str, Any] = {"attempt": envelope.attempt + 1}
        not_before = delay_to_not_before(delay)
        if not_before is not None:
            changes["not_before"] = not_before
        return resign(envelope, envelope.replace(**changes))

    @staticmethod
    def replayed_envelope(envelope: Envelope, delay: float | None, *, now: datetime | None = None,
                          queue: str | None = None) -> Envelope:
        """The envelope a replay publishes (onto ``queue`` when given): same id, attempt 0,
        replay recorded in meta."""
        now = now or utcnow()
        meta = dict(envelope.meta)
        meta[REPLAY_COUNT_META] = int(meta.get(REPLAY_COUNT_META) or 0) + 1
        meta[REPLAYED_AT_META] = to_iso(now)
        not_before = now + timedelta(seconds=delay) if delay and delay > 0 else None
        changes: dict[str, Any] = {"attempt": 0, "not_before": not_before, "meta": meta}
        if queue is not None:
            changes["queue"] = queue
        return resign(envelope, envelope.replace(**changes))

    @staticmethod
    def ready_now_envelope(envelope: Envelope, now: datetime) -> Envelope:
        """The envelope ``requeue`` stores for a delayed message it makes ready: its
        ``not_before`` is ``now`` (its age starts now)."""
        return resign(envelope, envelope.replace(not_before=now))

    @staticmethod
    def matches_replay(entry: DeadLetterEntry, since: datetime | None, ids: set[str] | None, task: str | None) -> bool:
        """The replay/purge filter, in one place for every adapter."""
        if since is not None and entry.dead_at < since:
            return False
        if ids is not None and entry.envelope.id not in ids:
            return False
        if task is not None and entry.envelope.name != task:
            return False
        return True

    # -- primitives -----------------------------------------------------------------

    @abstractmethod
    async def _publish(self, envelopes: list[Envelope]) -> None: ...

    async def _enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        """Write ``writes`` to ``backend``, then publish ``envelopes``, in one round trip
        when the backend shares this broker's server; False (nothing done) otherwise.
        Either everything is stored or nothing; a status write the adapter cannot do in
        the same step returns False before anything is written."""
        return False

    async def _ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        """Write ``write`` to ``backend``, then ack ``delivery``, in one round trip when
        the backend shares this broker's server; False (nothing done) otherwise. A stale
        receipt still stores the status (as ``set_status`` then ``ack`` would)."""
        return False

    async def _broadcast(self, channel: str, envelope: Envelope) -> None:
        raise Unsupported(f"the {self.scheme} broker does not support broadcast")

    async def _open_subscription(self, sub: Subscription) -> None:
        """Register the subscriber (broadcast cursors start *now*)."""

    async def _close_subscription(self, sub: Subscription) -> None:
        """Forget the subscriber; must not release deliveries already handed out."""

    async def _unclaim(self, deliveries: list[Delivery]) -> None:
        """Hand back queue deliveries that were claimed but never handed to the consumer:
        ready again now, their receipts fenced, no attempt counted.

        Default: ``_requeue`` by id (``_nack`` where requeue is unsupported). Adapters that
        can release by receipt override it, and then also take back the delivery count."""
        for delivery in deliveries:
            try:
                await self._requeue(delivery.queue, {delivery.envelope.id})
            except Unsupported:
                await self._nack(delivery, requeue=True, delay=None)

    @abstractmethod
    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        """Claim up to ``limit`` queue deliveries (leases set) plus any broadcast copies
        due to this subscriber; wait up to ``timeout`` seconds for at least one."""

    @abstractmethod
    async def _ack(self, delivery: Delivery) -> None: ...

    @abstractmethod
    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None: ...

    @abstractmethod
    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime: ...

    @abstractmethod
    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]: ...

    @abstractmethod
    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]: ...

    async def _peek_page(self, queue: str, state: str, limit: int, cursor: str | None) -> MessagePage:
        """Adapters with a native cursor override this; the default pages by offset,
        encoded in the cursor (``o<offset>``) and bounded by ``MAX_PAGE_OFFSET``."""
        offset = 0
        if cursor is not None:
            digits = cursor[1:]
            if not cursor.startswith("o") or not digits.isdigit() or len(digits) > 9:
                raise ValueError(f"invalid cursor {cursor[:40]!r}: pass back a next_cursor of this queue and state")
            offset = int(digits)
        check_page(limit, offset)
        infos = await self._peek(queue, state, limit, offset) if limit else []
        more = limit > 0 and len(infos) == limit and offset + limit <= MAX_PAGE_OFFSET
        return MessagePage(messages=infos, next_cursor=f"o{offset + limit}" if more else None)

    @abstractmethod
    async def _requeue(self, queue: str, ids: set[str]) -> int: ...

    @abstractmethod
    async def _remove(self, queue: str, ids: set[str]) -> int: ...

    @abstractmethod
    async def _purge(self, queue: str) -> int: ...

    @abstractmethod
    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage: ...

    @abstractmethod
    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None: ...

    @abstractmethod
    async def _replay_dead_letters(
        self,
        queue: str,
        *,
        limit: int,
        since: datetime | None,
        delay: float | None,
        dry_run: bool,
        ids: set[str] | None,
        task: str | None,
    ) -> ReplayResult: ...

    @abstractmethod
    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int: ...


def queued_meta(envelope: Envelope) -> dict[str, Any]:
    """The ``meta`` of an enqueued task's ``queued`` status."""
    return {"task": envelope.name, "queue": envelope.queue, "max_retries": envelope.max_retries}


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected seconds, got {value!r}")
    return float(value)


def _check_page(limit: int, offset: int) -> None:
    check_page(limit, offset)


def _ids(ids: Iterable[str] | str) -> set[str]:
    if isinstance(ids, str):
        ids = [ids]
    wanted = set()
    for value in ids:
        if not isinstance(value, str) or not value:
            raise ValueError(f"message ids must be non-empty strings, got {value!r}")
        wanted.add(value)
    return wanted


__all__ = [
    "Broker", "FULL_WAIT_SECONDS", "PEEK_STATES", "RECEIVE_WAIT_SECONDS", "Subscription", "default_consumer_name",
    "queued_meta", "raise_if_cancelled",
]
