"""``SQSChannels``: broadcast through SNS, one topic per channel fanning out to one SQS
queue per subscriber (raw delivery, so the SQS message is the envelope itself).

A ``consume`` with channels creates its subscriber queue (``B_s<token>``, with a policy
letting this namespace's topics send to it) and subscribes it to each channel's topic;
closing the subscription unsubscribes and deletes the queue. One long poll on the
subscriber queue stays in flight for the life of the subscription; copies are deleted
as soon as they arrive (a broadcast copy has no lease) and wait in memory for the next
``_receive``, deduplicated by envelope id.

A subscriber that vanished without closing (a killed process) leaves its queue and
subscriptions behind, and every broadcast would keep filling that queue. Live
subscribers tag their queue (``stem-seen``) every ``HEARTBEAT_S``; whoever subscribes
(and every live subscriber, hourly) deletes subscriber queues unseen for ``STALE_S`` and
the subscriptions of queues that no longer exist.

Without SNS (not reachable, not allowed, or ``sns=false``) the broker's ``broadcast``
capability is false: the control plane then says so instead of timing out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ...contract.broker import Subscription
from ...envelope import Delivery, Envelope
from ...errors import StemError
from .batch import SQSBatches
from .codec import ATTR_CHANNEL, MAX_BROADCAST_BYTES, Received, outgoing
from .connection import QueueMissing, SQSCallError, SQSConnection
from .names import TAG_SEEN
from .queues import SQSQueues, name_of

log = logging.getLogger("stem.sqs")

HEARTBEAT_S = 300.0
STALE_S = 900.0
REAP_EVERY_HEARTBEATS = 12
BACKLOG_LIMIT = 10_000
SEEN_IDS_REMEMBERED = 1_000
LONG_POLL_RETRY_S = 1.0
RECEIVE_ATTRIBUTES = {"MessageAttributeNames": ["All"]}


@dataclass(eq=False)
class SQSSubscriber:
    """The broadcast side of one subscription."""

    url: str
    arn: str
    wake: asyncio.Event
    subscriptions: list[str] = field(default_factory=list)
    inbox: deque[Delivery] = field(default_factory=lambda: deque(maxlen=BACKLOG_LIMIT))
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    loop: "asyncio.Task[None] | None" = None


class SQSChannels:
    """Topics, subscriber queues and the broadcast publish."""

    def __init__(self, conn: SQSConnection, queues: SQSQueues, batches: SQSBatches, *, wait_seconds: int) -> None:
        self._conn = conn
        self._queues = queues
        self._batches = batches
        self._wait = wait_seconds
        self._topics: dict[str, str] = {}
        self._subscribers: dict[int, SQSSubscriber] = {}
        self.unavailable: str | None = None

    async def probe(self) -> None:
        """Find out whether SNS answers; if not, broadcast is off (``unavailable`` says why)."""
        if not self._conn.has_sns:
            self.unavailable = "SNS is turned off (sns=false)"
            return
        try:
            await self._conn.sns("list_topics")
        except StemError as exc:
            self.unavailable = f"SNS is not reachable or not allowed ({exc})"
            self._conn.drop_sns()
            log.warning("sqs broker: broadcast is off: %s", self.unavailable)

    async def topic(self, channel: str) -> str:
        arn = self._topics.get(channel)
        if arn is None:
            arn = str((await self._conn.sns("create_topic", Name=self._queues.names.topic(channel)))["TopicArn"])
            self._topics[channel] = arn
        return arn

    # -- publishing -----------------------------------------------------------------

    async def broadcast(self, channel: str, envelope: Envelope) -> None:
        message = outgoing(envelope, extra={ATTR_CHANNEL: channel}, delay=0, limit=MAX_BROADCAST_BYTES)
        arn = await self.topic(channel)
        try:
            await self._conn.sns("publish", TopicArn=arn, Message=message.body, MessageAttributes=message.attributes)
        except QueueMissing:
            # A subscriber queue vanished with its subscription left (moto refuses the whole
            # publish then): reap, and publish again (receivers drop a copy seen twice).
            await self.reap([channel])
            await self._conn.sns("publish", TopicArn=arn, Message=message.body, MessageAttributes=message.attributes)

    # -- subscribing ----------------------------------------------------------------

    async def subscribe(self, sub: Subscription, wake: asyncio.Event) -> None:
        names = self._queues.names
        name = names.subscriber(os.urandom(8).hex())
        url = str((await self._conn.sqs("create_queue", QueueName=name, tags={TAG_SEEN: str(int(time.time()))}))
                  ["QueueUrl"])
        state = SQSSubscriber(url=url, arn="", wake=wake)
        self._subscribers[id(sub)] = state
        try:
            attrs = await self._conn.sqs("get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])
            state.arn = str(attrs["Attributes"]["QueueArn"])
            await self._conn.sqs("set_queue_attributes", QueueUrl=url, Attributes={"Policy": self._policy(state.arn)})
            for channel in sub.channels:
                reply = await self._conn.sns("subscribe", TopicArn=await self.topic(channel), Protocol="sqs",
                                             Endpoint=state.arn, Attributes={"RawMessageDelivery": "true"},
                                             ReturnSubscriptionArn=True)
                state.subscriptions.append(str(reply["SubscriptionArn"]))
        except BaseException:
            await self.unsubscribe(sub)
            raise
        state.loop = asyncio.ensure_future(self._listen(state, sub.channels))
        try:
            await self.reap(sub.channels)
        except StemError as exc:
            log.warning("could not reap stale broadcast subscribers: %s", exc)

    def _policy(self, queue_arn: str) -> str:
        """Let this namespace's topics send to the subscriber queue (real SQS needs it)."""
        _, partition, _, region, account, _ = queue_arn.split(":", 5)
        source = f"arn:{partition}:sns:{region}:{account}:{self._queues.names.topic('')}*"
        return json.dumps({"Version": "2012-10-17", "Statement": [{
            "Sid": "stem-broadcast", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": queue_arn, "Condition": {"ArnLike": {"aws:SourceArn": source}},
        }]})

    async def unsubscribe(self, sub: Subscription) -> None:
        state = self._subscribers.pop(id(sub), None)
        if state is not None:
            await self._remove(state)

    async def _remove(self, state: SQSSubscriber) -> None:
        if state.loop is not None:
            state.loop.cancel()
            await asyncio.gather(state.loop, return_exceptions=True)
        try:
            for arn in state.subscriptions:  # before the queue goes: SNS must not target a missing queue
                await self._conn.sns("unsubscribe", SubscriptionArn=arn)
            await self._conn.sqs("delete_queue", QueueUrl=state.url)
        except QueueMissing:
            pass
        except StemError as exc:
            log.warning("could not remove broadcast subscriber %s (%s); it is reaped after %.0f s",
                        name_of(state.url), exc, STALE_S)

    async def shutdown(self) -> None:
        """The broker is closing with subscriptions still open: remove them (best effort;
        what is left is reaped later)."""
        for key in list(self._subscribers):
            await self._remove(self._subscribers.pop(key))

    def pending(self, sub: Subscription) -> bool:
        state = self._subscribers.get(id(sub))
        return state is not None and bool(state.inbox)

    def take(self, sub: Subscription) -> list[Delivery]:
        state = self._subscribers.get(id(sub))
        if state is None or not state.inbox:
            return []
        items = list(state.inbox)
        state.inbox.clear()
        return items

    async def _listen(self, state: SQSSubscriber, channels: tuple[str, ...]) -> None:
        """The subscription's one long poll, for its whole life; heartbeats and reaping."""
        next_beat = time.monotonic() + HEARTBEAT_S
        beats = 0
        while True:
            try:
                reply = await self._conn.sqs("receive_message", wait=self._wait, QueueUrl=state.url,
                                             MaxNumberOfMessages=10, WaitTimeSeconds=self._wait, **RECEIVE_ATTRIBUTES)
                messages = [Received.from_message(m) for m in reply.get("Messages") or []]
                await asyncio.gather(*(self._batches.delete(state.url, m.handle) for m in messages))
                self._accept(state, messages, channels)
                if time.monotonic() >= next_beat:
                    next_beat, beats = time.monotonic() + HEARTBEAT_S, beats + 1
                    await self._conn.sqs("tag_queue", QueueUrl=state.url, Tags={TAG_SEEN: str(int(time.time()))})
                    if beats % REAP_EVERY_HEARTBEATS == 0:
                        await self.reap(channels)
            except QueueMissing:
                log.warning("broadcast subscriber queue %s was deleted; broadcasts stop reaching it",
                            name_of(state.url))
                return
            except StemError as exc:
                log.warning("reading broadcasts failed (%s); retrying", exc)
                await asyncio.sleep(LONG_POLL_RETRY_S)

    @staticmethod
    def _accept(state: SQSSubscriber, messages: list[Received], channels: tuple[str, ...]) -> None:
        for message in messages:
            env = message.envelope
            channel = message.attributes.get(ATTR_CHANNEL)
            if env is None or channel not in channels or env.id in state.seen:
                continue
            state.seen[env.id] = None
            if len(state.seen) > SEEN_IDS_REMEMBERED:
                state.seen.popitem(last=False)
            state.inbox.append(Delivery(envelope=env, receipt=f"b:{message.message_id}", queue=channel,
                                        channel=channel))
        if messages:
            state.wake.set()

    # -- reaping --------------------------------------------------------------------

    async def reap(self, channels: tuple[str, ...] | list[str]) -> int:
        """Delete subscriber queues unseen for ``STALE_S``, unsubscribing them first (and
        any subscription of ``channels`` whose queue is gone); returns how many queues were
        deleted. Unsubscribe before delete: a reaper dying in between leaves a queue nobody
        is subscribed with (reaped next time), never a subscription to a deleted queue, to
        which SNS keeps delivering (and moto refuses every publish of the topic)."""
        listing = await self._queues.listing(0.0)
        live = {s.url for s in self._subscribers.values()}
        cutoff = time.time() - STALE_S
        stale: dict[str, str] = {}
        for name, url in list(listing.subscribers.items()):
            if url in live:
                continue
            try:
                tags = (await self._conn.sqs("list_queue_tags", QueueUrl=url)).get("Tags") or {}
                if float(tags.get(TAG_SEEN) or 0) < cutoff:
                    stale[name] = url
            except QueueMissing:
                listing.subscribers.pop(name, None)
        existing = {name for name in listing.subscribers if name not in stale} | {name_of(u) for u in live}
        for channel in channels:
            await self._drop_orphans(await self.topic(channel), existing)
        reaped = 0
        for name, url in stale.items():
            try:
                await self._conn.sqs("delete_queue", QueueUrl=url)
                reaped += 1
            except QueueMissing:
                pass
            listing.subscribers.pop(name, None)
        return reaped

    async def _drop_orphans(self, topic: str, existing: set[str]) -> None:
        prefix = self._queues.names.subscriber_prefix
        params: dict[str, Any] = {"TopicArn": topic}
        while True:
            page = await self._conn.sns("list_subscriptions_by_topic", **params)
            for item in page.get("Subscriptions") or []:
                queue = str(item.get("Endpoint") or "").rpartition(":")[2]
                if item.get("Protocol") == "sqs" and queue.startswith(prefix) and queue not in existing:
                    try:
                        await self._conn.sns("unsubscribe", SubscriptionArn=item["SubscriptionArn"])
                    except SQSCallError as exc:
                        log.warning("could not unsubscribe the vanished subscriber %s: %s", queue, exc)
            token = page.get("NextToken")
            if not token:
                return
            params["NextToken"] = token


__all__ = ["HEARTBEAT_S", "SQSChannels", "STALE_S"]
