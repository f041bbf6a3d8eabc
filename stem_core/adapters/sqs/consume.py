"""``SQSConsumer``: subscriptions, receiving (priority bands, long polling) and unclaim.

Each subscription watches the band queues of its Stem queues (``Source``), plus its
broadcast subscriber queue. How it receives, for cost and for priority:

* **busy** (the last round found work): short polls, one band queue after another,
  highest priority first, each asked only for what is still missing, so a steady drain
  costs one receive per 10 tasks. Queues of equal priority take turns. When a batch of
  ``SHARE_MIN_BATCH`` or more is asked for, a quarter of it is offered to the lower
  bands first, so a flood of high-priority work never starves them; smaller batches
  go strictly by priority, but a band passed over ``STARVE_ROUNDS`` rounds in a row
  is asked first once.
* **grace** (a round found nothing): for ``IDLE_GRACE_S`` more, short polls every
  ``IDLE_POLL_S``, so a consumer that stops soon after leaves no long poll behind;
* **idle**: one long poll per band queue, kept in flight across ``_receive`` calls,
  waiting ``MIN_WAIT_S`` at first and doubling up to the configured wait (20 s): an idle
  worker costs about 180 requests an hour per band queue in use.

Every receive runs as a task of its own, never cancelled by its caller: SQS has taken the
messages the moment it answers, so an answer nobody reads would hide them for a whole
lease. Answers that arrive after their subscription closed are handed straight back.
Whatever was received but is not to be handed out (a redelivery after an expired
lease, a long delay not yet due, more than the caller asked for) is recycled by
``SQSLeases`` before anything else happens.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ...clock import monotonic, utcnow
from ...contract.broker import Subscription
from ...envelope import Delivery, Envelope
from ...errors import StemError
from .channels import SQSChannels
from .codec import Received, delay_until
from .connection import QueueMissing, SQSConnection
from .leases import Lease, SQSLeases, receipt_of
from .names import BAND_KINDS
from .queues import BAND_REFRESH_S, SQSQueues
from .url import MAX_VISIBILITY_S

log = logging.getLogger("stem.sqs")

SHARE_MIN_BATCH = 4
SHARE_DIVISOR = 4
STARVE_ROUNDS = 32
# After the last message, short polls go on this long, this far apart, before the long
# polls start: a consumer that stops soon after (a CLI, a test, a pause) leaves no long
# poll behind on the server, where it could still take a message nobody will read.
IDLE_GRACE_S = 2.0
IDLE_POLL_S = 0.25
MIN_WAIT_S = 1
RECEIVE_ATTRIBUTES = {"MessageAttributeNames": ["All"], "MessageSystemAttributeNames": ["ApproximateReceiveCount"]}
MAX_RECEIVE = 10
HAND_BACK_WAIT_S = 5.0


@dataclass(eq=False)
class Source:
    """One band queue a subscription receives from."""

    queue: str
    band: int
    url: str
    poll: "asyncio.Task[None] | None" = None
    long: bool = False
    skipped: int = 0
    wait: int = MIN_WAIT_S


@dataclass(eq=False)
class Got:
    """A receive answer waiting to be handed out: lease started at ``issued``."""

    source: Source
    message: Received
    issued: float
    issued_at: datetime


@dataclass(eq=False)
class SQSSubscription:
    sources: list[Source] = field(default_factory=list)
    inbox: list[Got] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # None while work keeps coming; else when the last round found nothing.
    idle_since: float | None = None
    turn: int = 0
    version: int = -1
    refreshed: float = 0.0
    closed: bool = False
    error: BaseException | None = None


class SQSConsumer:
    """Receiving for every subscription of one broker."""

    def __init__(self, conn: SQSConnection, queues: SQSQueues, leases: SQSLeases, channels: SQSChannels,
                 *, lease_seconds: float, wait_seconds: int) -> None:
        self._conn = conn
        self._queues = queues
        self._leases = leases
        self._channels = channels
        self._visibility = max(1, math.ceil(lease_seconds))
        self._lease_seconds = lease_seconds
        self._max_wait = wait_seconds
        self._polls: set[asyncio.Task[Any]] = set()
        self._hand_backs: set[asyncio.Task[Any]] = set()

    # -- subscriptions --------------------------------------------------------------

    async def open(self, sub: Subscription) -> None:
        state = SQSSubscription()
        sub.state = state
        for queue in sub.queues:  # the default band exists, so an idle consumer can wait on it
            await self._queues.ensure(queue, BAND_KINDS[0])
        await self._sync(sub, state)
        if sub.channels:
            await self._channels.subscribe(sub, state.wake)

    async def close(self, sub: Subscription) -> None:
        state: SQSSubscription | None = sub.state
        if state is None:
            return
        state.closed = True
        short = [s.poll for s in state.sources if s.poll is not None and not s.long]
        if short:  # a short poll answers at once: wait for it rather than leave it to the strays
            await asyncio.wait(short)
        for got in self._take_inbox(state):
            self._hand_back(got)
        if sub.channels:
            await self._channels.unsubscribe(sub)

    async def shutdown(self) -> None:
        """The broker is closing: stop every receive still running (an answer lost now
        hides its messages for one lease; nothing is deleted), then let the hand-backs
        under way finish (a send and a delete each) for at most ``HAND_BACK_WAIT_S``."""
        for task in list(self._polls):
            task.cancel()
        await asyncio.gather(*self._polls, return_exceptions=True)
        if self._hand_backs:
            await asyncio.wait(list(self._hand_backs), timeout=HAND_BACK_WAIT_S)
        for task in list(self._hand_backs):
            task.cancel()
        await asyncio.gather(*self._hand_backs, return_exceptions=True)

    async def _sync(self, sub: Subscription, state: SQSSubscription) -> None:
        """Add the band queues that appeared since: ours at once, other processes' within
        ``BAND_REFRESH_S`` (the cached listing)."""
        listing = await self._queues.listing(BAND_REFRESH_S)
        known = {(s.queue, s.band) for s in state.sources}
        for queue in sub.queues:
            kinds = listing.queues.get(queue, {})
            if not any(kind in BAND_KINDS for kind in kinds):
                kinds = {BAND_KINDS[0]: await self._queues.ensure(queue, BAND_KINDS[0])}
            for kind, url in kinds.items():
                if kind in BAND_KINDS and (queue, int(kind[1:])) not in known:
                    state.sources.append(Source(queue, int(kind[1:]), url))
        state.version = self._queues.version
        state.refreshed = monotonic()

    # -- receiving ------------------------------------------------------------------

    async def receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: SQSSubscription = sub.state
        out = self._channels.take(sub)
        if limit <= 0 or not sub.queues:
            if not out and timeout > 0 and sub.channels:
                await self._wait(sub, state, timeout)
                out = self._channels.take(sub)
            return out
        if state.error is not None:
            error, state.error = state.error, None
            raise error
        if state.version != self._queues.version or monotonic() - state.refreshed > BAND_REFRESH_S:
            await self._sync(sub, state)
        deliveries = await self._take(sub, state, limit)
        if not deliveries and state.idle_since is not None and monotonic() - state.idle_since < IDLE_GRACE_S:
            await self._wait(sub, state, min(timeout, IDLE_POLL_S))  # a pause between the short polls of the grace
            deliveries = await self._take(sub, state, limit)
            out += self._channels.take(sub)
            if not deliveries and not out:
                await self._round(state, limit)
                deliveries = await self._take(sub, state, limit)
            return out + deliveries
        if not deliveries and state.idle_since is None:
            await self._round(state, limit)
            deliveries = await self._take(sub, state, limit)
            if not deliveries:
                return out  # the grace begins: the next call pauses, then polls again
        if not deliveries and not out:
            for source in state.sources:
                if source.poll is None:
                    source.wait = max(source.wait, MIN_WAIT_S)
                    self._start(state, source, min(MAX_RECEIVE, limit), source.wait)
            await self._wait(sub, state, timeout)
            deliveries = await self._take(sub, state, limit)
            out += self._channels.take(sub)
        return out + deliveries

    async def _wait(self, sub: Subscription, state: SQSSubscription, timeout: float) -> None:
        state.wake.clear()
        if state.inbox or state.error is not None or self._channels.pending(sub):
            return
        try:
            async with asyncio.timeout(timeout):
                await state.wake.wait()
        except TimeoutError:
            pass

    def _order(self, state: SQSSubscription) -> tuple[list[Source], bool]:
        """Sources for one busy round, highest band first, equal bands taking turns; a
        starved source first. Also whether the batch-share rule applies this round."""
        state.turn += 1
        bands = sorted({s.band for s in state.sources}, reverse=True)
        ordered: list[Source] = []
        for band in bands:
            same = [s for s in state.sources if s.band == band]
            shift = state.turn % len(same)
            ordered.extend(same[shift:] + same[:shift])
        starved = next((s for s in ordered if s.skipped >= STARVE_ROUNDS), None)
        if starved is not None:
            return [starved] + [s for s in ordered if s is not starved], False
        return ordered, len(bands) > 1

    async def _round(self, state: SQSSubscription, limit: int) -> None:
        """Short polls in priority order until ``limit`` messages are in the inbox."""
        ordered, share_rule = self._order(state)
        share = limit // SHARE_DIVISOR if share_rule and limit >= SHARE_MIN_BATCH else 0
        top = ordered[0].band if ordered else -1
        polled: set[int] = set()
        again: list[Source] = []
        for source in ordered:
            reserve = share if source.band == top else 0
            asked = min(MAX_RECEIVE, limit - len(state.inbox) - reserve)
            if asked <= 0 or source.poll is not None:
                continue
            polled.add(id(source))
            if await self._short_poll(state, source, asked) == asked and reserve:
                again.append(source)  # the top band had more: offer it what the others left
            if len(state.inbox) >= limit:
                break
        for source in again:
            asked = min(MAX_RECEIVE, limit - len(state.inbox))
            if asked > 0 and source.poll is None:
                await self._short_poll(state, source, asked)
        for source in state.sources:
            source.skipped = 0 if id(source) in polled else source.skipped + 1
        if state.inbox:
            state.idle_since = None
        elif state.idle_since is None:
            state.idle_since = monotonic()

    async def _short_poll(self, state: SQSSubscription, source: Source, count: int) -> int:
        """How many messages one short poll added to the inbox."""
        before = len(state.inbox)
        task = self._start(state, source, count, 0)
        await asyncio.wait({task})  # not the task itself: a cancelled caller must not cancel it
        return len(state.inbox) - before

    def _start(self, state: SQSSubscription, source: Source, count: int, wait: int) -> "asyncio.Task[None]":
        task = asyncio.ensure_future(self._poll(state, source, count, wait))
        source.poll, source.long = task, wait > 0
        self._polls.add(task)
        task.add_done_callback(self._polls.discard)
        return task

    async def _poll(self, state: SQSSubscription, source: Source, count: int, wait: int) -> None:
        issued, issued_at = monotonic(), utcnow()
        try:
            reply = await self._conn.sqs("receive_message", wait=wait, QueueUrl=source.url,
                                         MaxNumberOfMessages=count, WaitTimeSeconds=wait,
                                         VisibilityTimeout=self._visibility, **RECEIVE_ATTRIBUTES)
        except QueueMissing:
            self._queues.forget(source.url)
            if source in state.sources:
                state.sources.remove(source)
            reply = {}
        except StemError as exc:
            state.error = exc
            reply = {}
        finally:
            source.poll = None
        got = [Got(source, Received.from_message(m), issued, issued_at) for m in reply.get("Messages") or []]
        if wait:
            source.wait = MIN_WAIT_S if got else min(self._max_wait, source.wait * 2)
        if state.closed:
            for item in got:
                self._hand_back(item)
        else:
            state.inbox.extend(got)
            if got:
                state.idle_since = None
        state.wake.set()

    # -- handing out ----------------------------------------------------------------

    @staticmethod
    def _take_inbox(state: SQSSubscription) -> list[Got]:
        items, state.inbox = state.inbox, []
        return items

    async def _take(self, sub: Subscription, state: SQSSubscription, limit: int) -> list[Delivery]:
        """Hand out the best ``limit`` of the inbox; recycle what must not be handed out."""
        now = utcnow()
        ready: list[tuple[Got, Envelope]] = []
        chores: list[Any] = []
        for got in self._take_inbox(state):
            env = got.message.envelope
            if env is None or got.message.receive_count > 1 or (env.not_before is not None and env.not_before > now):
                chores.append(self._settle_stray(got))
            else:
                ready.append((got, env))
        ready.sort(key=lambda pair: (-pair[0].source.band, pair[1].ready_at))
        chores.extend(self._settle_stray(got) for got, _ in ready[limit:])
        if chores:
            state.idle_since = None  # what was recycled is ready again at once
            await asyncio.gather(*chores)
        out = []
        for got, env in ready[:limit]:
            delivery = await self._deliver(got, env)
            if delivery is not None:
                out.append(delivery)
        return out

    async def _deliver(self, got: Got, env: Envelope) -> Delivery | None:
        source, message = got.source, got.message
        lease = Lease(source.url, message.handle, source.queue, BAND_KINDS[source.band], env,
                      got.issued + self._visibility, message.base)
        expires = got.issued_at + timedelta(seconds=self._visibility)
        wanted = env.visibility_timeout or self._lease_seconds
        if math.ceil(wanted) != self._visibility:
            started = monotonic()
            if await self._leases.change(lease, min(math.ceil(wanted), MAX_VISIBILITY_S)) is not None:
                return None  # gone already: its lease ran out before we got here
            lease.deadline = started + wanted
            expires = utcnow() + timedelta(seconds=wanted)
        receipt = receipt_of(lease.kind, message.handle)
        self._leases.hold(receipt, lease)
        return Delivery(envelope=env, receipt=receipt, queue=source.queue, lease_expires_at=expires,
                        delivery_count=message.base + 1)

    def _hand_back(self, got: Got) -> None:
        task = asyncio.ensure_future(self._settle_stray(got))
        self._hand_backs.add(task)
        task.add_done_callback(self._hand_backs.discard)

    async def _settle_stray(self, got: Got) -> None:
        """A received message that is not handed out: recycle or re-delay it, or bury an
        undecodable one (its lease runs meanwhile, so nothing is lost if this fails)."""
        source, message = got.source, got.message
        env = message.envelope or _undecodable(source.queue, message)
        lease = Lease(source.url, message.handle, source.queue, BAND_KINDS[source.band], env,
                      got.issued + self._visibility, message.base)
        try:
            if message.envelope is None:
                await self._leases.bury(source.queue, env, f"undecodable message: {message.problem}", {})
                await self._leases.delete(lease)
                return
            # Received before: its last holder's lease ran out, so that delivery counts.
            counted = message.base + (1 if message.receive_count > 1 else 0)
            await self._leases.recycle(lease, env, counted, delay_until(env.not_before))
        except StemError as exc:
            log.warning("could not hand back message %s of %s (%s); it returns when its lease expires",
                        message.message_id, source.queue, exc)


def _undecodable(queue: str, message: Received) -> Envelope:
    """The dead letter of a message that is no envelope. Its id comes from the SQS message
    id, so burying it again (its delete after the bury failed, or its lease ran out first
    and another consumer got it) leaves one dead letter: the dead queue's scan keeps one
    entry per envelope id."""
    return Envelope(name="stem.undecodable", id=f"sqs-{message.message_id}", queue=queue,
                    args={"body": message.body[:200_000]}, meta={"sqs_message_id": message.message_id})


__all__ = ["SQSConsumer", "SQSSubscription", "Source"]
