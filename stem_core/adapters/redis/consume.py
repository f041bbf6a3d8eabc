"""``RedisConsumer``: subscriptions, claims, the idle wait, and settling.

* A claim (``claim.lua``) hands out, band 9 first and then the oldest ready time across
  the subscription's queues, from three kinds of candidates: undelivered entries
  (``XREADGROUP``), leases that ended (expired, nacked, requeued: ``XCLAIM``) and due
  messages of the queue's delayed set (delayed publishes, replays, delayed nacks),
  recording each lease atomically. So a replayed or nacked message keeps its rank by
  its original age, exactly as the memory broker. Only when a claim finds nothing does
  the consumer block, in a plain ``XREAD BLOCK`` on the streams' last ids (Lua cannot
  block, and a non-group read changes no state, so a cancelled or timed-out wait loses
  nothing); it also wakes at the next delayed or lease deadline the claim reported, and
  when a script makes something ready without a stream ``XADD`` (the ``P:w`` stream).
* Leases are the pending entries list. ``XAUTOCLAIM`` takes one idle threshold for a
  whole scan, so it cannot honour per-envelope ``visibility_timeout``; instead a ZSET
  of lease deadlines per queue names exactly the entries whose own lease ran out
  (O(log n), no PEL scan) and ``XCLAIM`` takes each one over, which resets its idle
  time. ``extend_lease`` is ``XCLAIM ... JUSTID`` plus a new deadline: never a re-publish.
* Fencing: every delivery gets a token (``receipt = queue|lid|token``); ack, nack and
  dead-letter scripts compare it with the lease record, so a stale holder settles
  nothing. Acknowledged entries are deleted (``XDEL``), never trimmed by
  ``MAXLEN``/``MINID``, so streams hold only live messages and memory stays flat.
* All Stem consumers read as one group consumer; the real holder is in the lease
  record, so consumer names never accumulate in Redis.
* Multi-queue claims run in one script over every subscribed queue's keys: exact
  cross-queue order on one server. On Redis Cluster each queue is one slot, but a
  subscription spanning queues in different slots would need one claim per queue
  (not implemented: standalone and Sentinel setups only for multi-queue consumers).
* A claim whose consumer is cancelled while it is in flight releases its leases once
  the reply arrives (``release.lua``); claimed deliveries a consumer stops before
  taking go back through the contract's ``_unclaim`` (a requeue by id).
* With a ``RedisBackend`` on the same server and database, ``Broker.ack_with_status``
  is one ``ack_with.lua`` call (final status then the fenced ack, sharing the status
  code of ``results_lib.lua`` and the ack code of ``lib.lua``; like the fused enqueue of
  ``publish.py`` it touches two hash tags, so it needs a standalone or Sentinel
  server). A status that moves to another queue/task index makes it do nothing, and
  the two steps run instead. The calls of one event-loop turn (tasks of a claimed batch
  finishing together) share one call: the statuses in call order, then each fenced
  ack; a failed call raises ``BrokerUnavailable`` in every caller; ``close`` waits for
  the settles in flight.

Consumers keep retrying by themselves while Redis is down and resume when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from ..._aio import UNSENT, TurnBatch
from ...clock import monotonic, utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription, raise_if_cancelled
from ...contract.types import DeadLetterEntry
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, LeaseLost, StemError
from ...settings import PRUNE_BATCH
from .backend import RedisBackend, SharedBackend
from .channels import RedisChannels, RedisChannelSubscription
from .codec import INVALID_REASON, dead_letter_json, decode, lease_ms, parse_receipt, ready_us, receipt, text
from .connection import RedisConnection
from .keys import ACK_KEYS, BANDS, W_INDEX, KeyCache, from_us, to_us
from .wire import resp

log = logging.getLogger("stem.redis")

# Ended leases and due delayed messages a claim considers per queue (the rest follow on
# the next claim; ranking among them is exact up to this many).
CLAIM_SCAN = 256
# A consumer that lost Redis tries again after this long (bounded by its wait).
RECONNECT_WAIT_S = 0.5
# XREAD BLOCK takes whole milliseconds; never 0 (that would mean "forever").
MIN_BLOCK_MS = 1
# A blocking read blocks at most this share of the socket timeout.
BLOCK_SHARE_OF_TIMEOUT = 0.5
# Settles per ack_with.lua call (keeps one script call short).
SETTLE_CHUNK = 1000

# One ack_with_status waiting for its turn's ack_with.lua call: the backend, the parsed
# receipt (queue, lid, token) and the status write.
_Settle = tuple[RedisBackend, tuple[str, str, str], StatusWrite]
# What a claim returns: the deliveries, else the cursors to block on and how long.
_Claimed = tuple[list[Delivery], list[bytes], float]


class RedisSubscription:
    """Keys a subscription's scripts need, built once per ``consume`` call."""

    __slots__ = ("keys", "packed", "streams", "broadcasts")

    def __init__(self, queues: tuple[str, ...], blocks: KeyCache) -> None:
        self.keys: list[bytes] = [key for queue in queues for key in blocks(queue)]
        self.packed = resp(*self.keys)  # claim.lua's keys, sent with every claim
        # What an idle consumer blocks on: each queue's band streams and its wake stream
        # (claim.lua returns the cursors in this order).
        self.streams: list[bytes] = [key for queue in queues
                                     for key in (*blocks(queue)[:BANDS], blocks(queue)[W_INDEX])]
        self.broadcasts: RedisChannelSubscription | None = None


class RedisConsumer:
    """Receiving and settling for one namespace."""

    def __init__(self, conn: RedisConnection, keys: KeyCache, channels: RedisChannels, shared: SharedBackend, *,
                 lease_seconds: float, dead_letter_retention: float) -> None:
        self._conn = conn
        self._keys = keys
        self._dead_letter_retention = dead_letter_retention
        self._channels = channels
        self._shared = shared
        self._default_ms = max(1, int(round(lease_seconds * 1000)))
        self._closed = False
        self._outage = False
        self._background: set[asyncio.Future[Any]] = set()
        # ack_with_status calls made in one event-loop turn settle together.
        self._settles: TurnBatch[_Settle] = TurnBatch(self._settle_batch)

    def open(self) -> None:
        """The connection is open (again): receiving and settling may start."""
        self._closed = False

    async def close(self) -> None:
        """Finish the settles of this turn, then stop: receivers raise, releases end."""
        await self._settles.drain()  # settles of this turn start, those in flight end
        self._closed = True
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def check_open(self) -> None:
        if self._closed or not self._conn.is_open:
            raise BrokerUnavailable(f"the Redis broker for {self._conn.shown_url} is closed")

    # -- subscriptions --------------------------------------------------------------

    async def open_subscription(self, sub: Subscription) -> None:
        self.check_open()
        state = RedisSubscription(sub.queues, self._keys)
        sub.state = state
        if sub.channels:
            state.broadcasts = RedisChannelSubscription(sub.consumer, sub.channels)
            await self._channels.open(state.broadcasts)

    async def close_subscription(self, sub: Subscription) -> None:
        state: RedisSubscription | None = sub.state
        if state is not None and state.broadcasts is not None and not self._closed:
            await self._channels.close(state.broadcasts)

    # -- receiving ------------------------------------------------------------------

    async def receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: RedisSubscription = sub.state
        deadline = monotonic() + timeout
        while True:
            self.check_open()
            raise_if_cancelled()
            try:
                out = await self._channels.read(state.broadcasts) if state.broadcasts is not None else []
                cursors: list[bytes] = []
                wait = timeout
                if limit > 0 and sub.queues:
                    claimed, cursors, wait = await self._claim_shielded(sub, state, limit)
                    out.extend(claimed)
                if self._outage:
                    self._outage = False
                    log.warning("Redis at %s is reachable again; consuming resumes", self._conn.shown_url)
                if out:
                    return out
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return []
                await self._wait(state, cursors, min(remaining, wait))
            except BrokerUnavailable as exc:
                if self._closed:
                    raise
                if not self._outage:
                    self._outage = True
                    log.warning("consumer lost Redis (%s); retrying until it is back", exc)
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return []
                await asyncio.sleep(min(RECONNECT_WAIT_S, remaining))

    async def _claim_shielded(self, sub: Subscription, state: RedisSubscription, limit: int) -> _Claimed:
        # A consumer cancelled while its claim is in flight must not strand the leases
        # the script already granted: they are released once the reply arrives.
        task = asyncio.ensure_future(self._claim(sub, state, limit))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_later)
            raise

    async def _claim(self, sub: Subscription, state: RedisSubscription, limit: int) -> _Claimed:
        args = resp(sub.consumer, limit, self._default_ms, CLAIM_SCAN, len(sub.queues))
        reply = await self._conn.evalsha("claim", len(state.keys), 5, state.packed + args)
        now, next_due, count = reply[0], reply[1], reply[2]
        if count == 0:
            wait = (next_due - now) / 1e6 if next_due >= 0 else float("inf")
            return [], reply[3:], max(0.0, wait)
        out: list[Delivery] = []
        for k in range(3, 3 + 6 * count, 6):
            qi, lid, token, deliveries, until, raw = reply[k:k + 6]
            queue = sub.queues[qi]
            rcpt = receipt(queue, text(lid), token)
            envelope, ok = decode(raw, text(lid), queue)
            if not ok:
                await self._dead_letter_invalid(queue, rcpt, envelope)
                continue
            out.append(Delivery(envelope=envelope, receipt=rcpt, queue=queue, lease_expires_at=from_us(until),
                                delivery_count=int(deliveries)))
        return out, [], 0.0

    async def _dead_letter_invalid(self, queue: str, rcpt: str, envelope: Envelope) -> None:
        log.warning("dead-lettering an undecodable envelope in queue %s: %s", queue, envelope.meta.get("error"))
        entry = DeadLetterEntry(envelope=envelope, reason=INVALID_REASON, meta={"error": envelope.meta.get("error")},
                                dead_at=utcnow())
        _, lid, token = rcpt.split("|")
        keys = self._keys.of(queue).settle_for(lid)[:9]
        await self._conn.call("dead", keys, [lid, token, envelope.id, dead_letter_json(entry), to_us(entry.dead_at),
                                             *self._prune_args(entry.dead_at)])

    def _release_later(self, task: "asyncio.Future[_Claimed]") -> None:
        if task.cancelled() or task.exception() is not None or not task.result()[0]:
            return
        by_queue: dict[str, list[str]] = {}
        for delivery in task.result()[0]:
            parsed = parse_receipt(delivery.receipt)
            if parsed is not None:
                by_queue.setdefault(parsed[0], []).extend(parsed[1:])

        async def release() -> None:
            for queue, args in by_queue.items():
                try:
                    await self._conn.call("release", self._keys.of(queue).settle["0s"], args)
                except BrokerUnavailable:
                    pass  # the leases simply expire and the entries are delivered again

        bg = asyncio.ensure_future(release())
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    async def _wait(self, state: RedisSubscription, cursors: list[bytes], seconds: float) -> None:
        """Block until a watched stream grows or ``seconds`` pass (no state changes)."""
        streams: dict[Any, Any] = dict(zip(state.streams, cursors))
        if state.broadcasts is not None:
            streams.update(self._channels.cursors(state.broadcasts))
        if not streams:
            await asyncio.sleep(seconds)
            return
        # The server answers a blocked XREAD after `block` ms; keep that well inside the
        # socket timeout so the reply is never mistaken for a dead connection.
        ceiling = max(MIN_BLOCK_MS, int(self._conn.socket_timeout * 1000 * BLOCK_SHARE_OF_TIMEOUT))
        block = min(ceiling, max(MIN_BLOCK_MS, int(seconds * 1000)))
        # Only the wake matters, not the entry (the claim takes it): the reply is not parsed.
        await self._conn.command(b"*%d\r\n%s" % (6 + 2 * len(streams), resp(
            "XREAD", "COUNT", 1, "BLOCK", block, "STREAMS", *streams.keys(), *streams.values())))

    # -- settling -------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        parsed = _settle_target(delivery)
        if parsed is not None:
            queue, lid, token = parsed
            await self._conn.evalsha("ack", ACK_KEYS, 2, self._keys.of(queue).packed_ack[lid[:2]] + resp(lid, token))

    async def nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        parsed = _settle_target(delivery)
        if parsed is None:
            return
        queue, lid, token = parsed
        keys = self._keys.of(queue).settle_for(lid)
        if not requeue:
            await self._conn.call("nack", keys, [lid, token, 0, "", 0, 0, 0])
            return
        env = Broker.requeued_envelope(delivery.envelope, delay)
        due = to_us(env.not_before) if delay is not None and delay > 0 and env.not_before is not None else 0
        await self._conn.call("nack", keys, [lid, token, 1, env.to_json(), ready_us(env), due, lease_ms(env)])

    async def extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        parsed = parse_receipt(delivery.receipt)
        if parsed is not None:
            queue, lid, token = parsed
            keys = self._keys.of(queue).settle_for(lid)[:3]
            until = await self._conn.call("extend", keys, [lid, token, max(1, int(round(seconds * 1000)))])
            if until >= 0:
                return from_us(until)
        raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")

    async def dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        parsed = _settle_target(delivery)
        if parsed is None:
            return
        queue, lid, token = parsed
        entry = DeadLetterEntry(envelope=delivery.envelope, reason=reason, meta=meta, dead_at=utcnow())
        await self._conn.call("dead", self._keys.of(queue).settle_for(lid)[:9],
                              [lid, token, delivery.envelope.id, dead_letter_json(entry), to_us(entry.dead_at),
                               *self._prune_args(entry.dead_at)])

    def _prune_args(self, now: datetime) -> list[int]:
        """``dead.lua``'s retention cutoff and batch: older dead letters are deleted."""
        return [to_us(now - timedelta(seconds=self._dead_letter_retention)), PRUNE_BATCH]

    # -- settling with a result backend on this server: one script for both steps -----

    async def ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        parsed = parse_receipt(delivery.receipt)
        shared = self._shared.find(backend) if parsed is not None else None
        if shared is None:
            return False
        self.check_open()
        return await self._settles.add((shared, parsed, write))

    async def _settle_batch(self, batch: list[_Settle]) -> list[Any]:
        """Settle together what was settled during one event-loop turn (tasks of one
        claimed batch tend to finish together): one ack_with.lua call instead of one each.
        Outcomes: True (fused) or False (take the two steps) per call, or the error of
        its script call (and of every later one: they are not sent)."""
        outcomes: list[Any] = [UNSENT] * len(batch)
        by_backend: dict[int, list[int]] = {}
        for k, item in enumerate(batch):
            by_backend.setdefault(id(item[0]), []).append(k)
        try:
            for positions in by_backend.values():
                for start in range(0, len(positions), SETTLE_CHUNK):
                    run = positions[start:start + SETTLE_CHUNK]
                    fused = await self._settle_run([batch[k] for k in run])
                    for k in run:
                        outcomes[k] = fused
        except StemError as exc:
            return [exc if outcome is UNSENT else outcome for outcome in outcomes]
        return outcomes

    async def _settle_run(self, items: list[_Settle]) -> bool:
        """One ack_with.lua call: every status of ``items`` in call order, then each fenced
        ack. A stale receipt stores its status and acks nothing, as set_status then ack
        would; a status moving to another index makes the script do nothing, and every
        caller then takes the two steps (``ack_with`` answers False)."""
        shared = items[0][0]
        # The five settle keys of each (queue, lid prefix) once: a batch mostly shares one.
        blocks: dict[tuple[str, str], int] = {}
        packed = [shared.packed_status_keys]
        nkeys = len(shared.status_keys)
        acks: list[Any] = []
        for _, (queue, lid, token), _ in items:
            at = blocks.get((queue, lid[:2]))
            if at is None:
                at = blocks[(queue, lid[:2])] = nkeys
                packed.append(self._keys.of(queue).packed_ack[lid[:2]])
                nkeys += ACK_KEYS
            acks += (at, lid, token)
        statuses = shared.status_batch(nkeys + 1, [item[2] for item in items])
        args = [*statuses.args(), *acks]
        packed += (resp(*statuses.keys), resp(*args))
        reply = await self._conn.evalsha("ack_with", nkeys + len(statuses.keys), len(args), b"".join(packed))
        fused = reply[0] == 1
        if fused:
            await shared.written()
        return fused


def _settle_target(delivery: Delivery) -> tuple[str, str, str] | None:
    """The receipt's parts for a queue delivery; None for broadcasts and foreign receipts."""
    if delivery.channel is not None:
        return None
    return parse_receipt(delivery.receipt)


__all__ = ["RedisConsumer", "RedisSubscription"]
