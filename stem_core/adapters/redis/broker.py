"""``RedisBroker``: the contract over Redis Streams, every multi-key step one Lua script.

Design (key layout and each script's KEYS/ARGV are in ``lua/``, lib.lua first):

* One stream per (queue, priority band 0..9), each with the consumer group ``stem``;
  publishing a ready message is a bare ``XADD`` (the enqueued total is derived from the
  streams' ``entries-added``); batches travel as one packed argument of ``publish.lua``.
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
* Delayed and leased copies are indexed by envelope id (requeue/remove are O(1));
  undelivered entries are not, so ``remove`` walks the undelivered part of each band
  in bounded chunks.
* All Stem consumers read as one group consumer; the real holder is in the lease
  record, so consumer names never accumulate in Redis.
* Broadcasts: a stream per channel, one group per subscription (``broadcast.py``).
* Multi-queue claims run in one script over every subscribed queue's keys: exact
  cross-queue order on one server. On Redis Cluster each queue is one slot, but a
  subscription spanning queues in different slots would need one claim per queue
  (not implemented: standalone and Sentinel setups only for multi-queue consumers).
* With a ``RedisBackend`` on the same server and database (same connection settings),
  ``Broker.enqueue`` and ``Broker.ack_with_status`` are one script each on the broker's
  client (``enqueue_with.lua``: queued statuses then the messages; ``ack_with.lua``:
  final status then the fenced ack), sharing the status code of ``results_lib.lua`` and
  the publish/ack code of ``lib.lua``. Those scripts touch keys of two hash tags (the
  queue's and the result namespace's), so like multi-queue claims they need a
  standalone or Sentinel server, which is what Stem supports. A status that moves to
  another queue/task index makes them do nothing, and the two steps run instead. The
  ``ack_with_status`` calls of one event-loop turn (tasks of a claimed batch finishing
  together) are one ``ack_with.lua`` call: the statuses in call order, then each fenced
  ack; a failed call raises ``BrokerUnavailable`` in every caller; ``close`` waits for
  the settles in flight.

Producers get ``BrokerUnavailable`` when Redis is down (after the client's retries);
consumers keep retrying by themselves and resume when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, ClassVar, Sequence

from ..._aio import UNSENT, TurnBatch
from ...clock import monotonic, utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.broker import Broker, Subscription, raise_if_cancelled
from ...contract.types import Capabilities, DeadLetterEntry
from ...envelope import Delivery, Envelope
from ...errors import BrokerUnavailable, LeaseLost, StemError
from ...settings import DEFAULT_LEASE_SECONDS, DEFAULT_NAMESPACE
from .broadcast import BroadcastMixin
from .codec import INVALID_REASON, dead_letter_json, decode, due_us, lease_ms, parse_receipt, ready_us, receipt, text
from .connection import Connection, RedisConfig, parse_url, resp
from .inspect import InspectMixin
from .keys import ACK_KEYS, BANDS, BLOCK_SIZE, W_INDEX, KeyCache, from_us, registry_key, to_us
from .results import RedisBackend

log = logging.getLogger("stem.redis")

BROKER_OPTIONS = {"lease_seconds": float}
# Ended leases and due delayed messages a claim considers per queue (the rest follow on
# the next claim; ranking among them is exact up to this many).
CLAIM_SCAN = 256
# Messages per publish.lua call in publish_many (keeps one script call short).
PUBLISH_CHUNK = 1000
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


class RedisBroker(InspectMixin, BroadcastMixin, Broker):
    """Redis Streams broker for ``redis://`` and ``rediss://`` URLs."""

    scheme: ClassVar[str] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        delayed=True, priority=True, broadcast=True, dead_letters=True,
        lease_extension=True, peek=True, durable=True, cross_process=True,
    )

    def __init__(self, config: RedisConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        super().__init__(namespace=namespace, lease_seconds=lease_seconds)
        self._conn = Connection(config, role="broker")
        self._keys = KeyCache(self.namespace)
        self._registry = registry_key(self.namespace)
        self._known: set[str] = set()
        self._default_ms = max(1, int(round(self.lease_seconds * 1000)))
        self._closed = False
        self._outage = False
        self._background: set[asyncio.Future[Any]] = set()
        # The last backend found on this server (enqueue_with/ack_with), checked by identity.
        self._shared: RedisBackend | None = None
        # ack_with_status calls made in one event-loop turn settle together.
        self._settles: TurnBatch[_Settle] = TurnBatch(self._settle_batch)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "RedisBroker":
        config = parse_url(url, options, BROKER_OPTIONS)
        lease = config.options.get("lease_seconds", DEFAULT_LEASE_SECONDS)
        return cls(config, namespace=namespace, lease_seconds=lease)

    def __repr__(self) -> str:
        return f"RedisBroker({self._conn.shown_url!r}, namespace={self.namespace!r})"

    async def connect(self) -> "RedisBroker":
        await self._conn.open()
        self._closed = False
        return self

    async def close(self) -> None:
        await self._settles.drain()  # settles of this turn start, those in flight end
        self._closed = True
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._conn.close()

    async def ping(self) -> None:
        with self._conn.guard:
            await self._conn.client.ping()

    async def _run(self, name: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        return await self._conn.call(name, keys, args)

    # -- producing ------------------------------------------------------------------

    async def _publish(self, envelopes: list[Envelope]) -> None:
        if len(envelopes) == 1:
            env = envelopes[0]
            if env.queue in self._known and (env.not_before is None or env.not_before <= utcnow()):
                # The hot path is a bare XADD (lib.lua: how the enqueued total counts it).
                stream = self._keys.of(env.queue).block[env.priority]
                lease = lease_ms(env)
                extra = ("v", lease) if lease else ()
                xadd = resp("XADD", stream, "*", "e", env.to_json(), "r", ready_us(env), *extra)
                await self._conn.command(b"*%d\r\n%s" % (7 + len(extra), xadd))
                return
        groups: dict[str, list[Envelope]] = {}
        for env in envelopes:
            groups.setdefault(env.queue, []).append(env)
        new = [q for q in groups if q not in self._known]
        client = self._conn.client
        with self._conn.guard:
            if new:
                await client.sadd(self._registry, *new)
            calls = [(q, envs[i:i + PUBLISH_CHUNK]) for q, envs in groups.items() for i in range(0, len(envs), PUBLISH_CHUNK)]
            if len(calls) == 1:
                queue, chunk = calls[0]
                await self._conn.call("publish", self._keys(queue), (_records(chunk),))
            else:
                # Several queues (or a huge batch): all-or-nothing in one MULTI/EXEC.
                script = self._conn.script("publish")
                async with client.pipeline(transaction=True) as pipe:
                    for queue, chunk in calls:
                        await script(keys=self._keys(queue), args=[_records(chunk)], client=pipe)
                    await pipe.execute()
        self._known.update(new)

    # -- with a result backend on this server: one script for both steps -------------

    def _same_server(self, backend: ResultBackend) -> RedisBackend | None:
        if backend is self._shared and backend.is_open:
            return backend
        if isinstance(backend, RedisBackend) and backend.shares_server(self._conn.config):
            self._shared = backend
            return backend
        return None

    async def _enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        shared = self._same_server(backend)
        if shared is None or len(envelopes) > PUBLISH_CHUNK:
            return False
        groups: dict[str, list[Envelope]] = {}
        for env in envelopes:
            groups.setdefault(env.queue, []).append(env)
        packed = [resp(self._registry), shared.packed_status_keys]
        publish: list[Any] = []
        for queue, envs in groups.items():
            packed.append(self._keys.of(queue).packed_block)
            publish += ("" if queue in self._known else queue, _records(envs))
        nkeys = 1 + len(shared.status_keys) + BLOCK_SIZE * len(groups)
        batch = shared.status_batch(nkeys + 1, writes)
        args = [len(groups), *batch.args(), *publish]
        packed += (resp(*batch.keys), resp(*args))
        reply = await self._conn.evalsha("enqueue_with", nkeys + len(batch.keys), len(args), b"".join(packed))
        if reply[0] != 1:
            return False  # a status moves to another index: nothing was done
        self._known.update(groups)
        await shared.written()
        return True

    async def _ack_with(self, delivery: Delivery, backend: ResultBackend, write: StatusWrite) -> bool:
        parsed = parse_receipt(delivery.receipt)
        shared = self._same_server(backend) if parsed is not None else None
        if shared is None:
            return False
        self._check_open()
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
        caller then takes the two steps (``_ack_with`` answers False)."""
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

    # -- consuming ------------------------------------------------------------------

    async def _open_subscription(self, sub: Subscription) -> None:
        self._check_open()
        state = _SubState(sub.queues, self._keys)
        sub.state = state
        if sub.channels:
            await self._open_channels(sub, state)

    async def _close_subscription(self, sub: Subscription) -> None:
        state: _SubState | None = sub.state
        if state is not None and sub.channels and not self._closed:
            await self._close_channels(sub, state)

    def _check_open(self) -> None:
        if self._closed or not self._conn.is_open:
            raise BrokerUnavailable(f"the Redis broker for {self._conn.shown_url} is closed")

    async def _receive(self, sub: Subscription, limit: int, timeout: float) -> list[Delivery]:
        state: _SubState = sub.state
        deadline = monotonic() + timeout
        while True:
            self._check_open()
            raise_if_cancelled()
            try:
                out = await self._read_channels(sub, state) if sub.channels else []
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
                await self._wait(sub, state, cursors, min(remaining, wait))
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

    async def _claim_shielded(self, sub: Subscription, state: "_SubState", limit: int) -> tuple[list[Delivery], list[bytes], float]:
        # A consumer cancelled while its claim is in flight must not strand the leases
        # the script already granted: they are released once the reply arrives.
        task = asyncio.ensure_future(self._claim(sub, state, limit))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_later)
            raise

    async def _claim(self, sub: Subscription, state: "_SubState", limit: int) -> tuple[list[Delivery], list[bytes], float]:
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
        await self._run("dead", keys, [lid, token, envelope.id, dead_letter_json(entry), to_us(entry.dead_at)])

    def _release_later(self, task: "asyncio.Future[tuple[list[Delivery], list[bytes], float]]") -> None:
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
                    await self._run("release", self._keys.of(queue).settle["0s"], args)
                except BrokerUnavailable:
                    pass  # the leases simply expire and the entries are delivered again

        bg = asyncio.ensure_future(release())
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)

    async def _wait(self, sub: Subscription, state: "_SubState", cursors: list[bytes], seconds: float) -> None:
        """Block until a watched stream grows or ``seconds`` pass (no state changes)."""
        streams: dict[Any, Any] = dict(zip(state.streams, cursors))
        streams.update(self._channel_cursors(state))
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

    async def _ack(self, delivery: Delivery) -> None:
        parsed = _settle_target(delivery)
        if parsed is not None:
            queue, lid, token = parsed
            await self._conn.evalsha("ack", ACK_KEYS, 2, self._keys.of(queue).packed_ack[lid[:2]] + resp(lid, token))

    async def _nack(self, delivery: Delivery, *, requeue: bool, delay: float | None) -> None:
        parsed = _settle_target(delivery)
        if parsed is None:
            return
        queue, lid, token = parsed
        keys = self._keys.of(queue).settle_for(lid)
        if not requeue:
            await self._run("nack", keys, [lid, token, 0, "", 0, 0, 0])
            return
        env = self.requeued_envelope(delivery.envelope, delay)
        due = to_us(env.not_before) if delay is not None and delay > 0 and env.not_before is not None else 0
        await self._run("nack", keys, [lid, token, 1, env.to_json(), ready_us(env), due, lease_ms(env)])

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        parsed = parse_receipt(delivery.receipt)
        if parsed is not None:
            queue, lid, token = parsed
            keys = self._keys.of(queue).settle_for(lid)[:3]
            until = await self._run("extend", keys, [lid, token, max(1, int(round(seconds * 1000)))])
            if until >= 0:
                return from_us(until)
        raise LeaseLost(f"lease of message {delivery.envelope.id} is no longer held by this receipt")

    async def _dead_letter(self, delivery: Delivery, *, reason: str, meta: dict[str, Any]) -> None:
        parsed = _settle_target(delivery)
        if parsed is None:
            return
        queue, lid, token = parsed
        entry = DeadLetterEntry(envelope=delivery.envelope, reason=reason, meta=meta, dead_at=utcnow())
        await self._run("dead", self._keys.of(queue).settle_for(lid)[:9],
                        [lid, token, delivery.envelope.id, dead_letter_json(entry), to_us(entry.dead_at)])


class _SubState:
    """Keys a subscription's scripts need, built once per ``consume`` call."""

    __slots__ = ("keys", "packed", "streams", "channels", "touched")

    def __init__(self, queues: tuple[str, ...], blocks: KeyCache) -> None:
        self.keys: list[bytes] = [key for queue in queues for key in blocks(queue)]
        self.packed = resp(*self.keys)  # claim.lua's keys, sent with every claim
        # What an idle consumer blocks on: each queue's band streams and its wake stream
        # (claim.lua returns the cursors in this order).
        self.streams: list[bytes] = [key for queue in queues for key in (*blocks(queue)[:BANDS], blocks(queue)[W_INDEX])]
        # channel -> [stream key, subs key, group, cursor]
        self.channels: dict[str, list[Any]] = {}
        self.touched = 0.0


def _records(envelopes: list[Envelope]) -> bytes:
    """publish.lua's one argument: ``<due>,<band>,<ready>,<lease>,<id len>,<json len>:<id><json>`` each."""
    parts: list[bytes] = []
    for env in envelopes:
        body = env.to_json().encode()
        ident = env.id.encode()
        head = f"{due_us(env)},{env.priority},{ready_us(env)},{lease_ms(env)},{len(ident)},{len(body)}:"
        parts += (head.encode(), ident, body)
    return b"".join(parts)


def _settle_target(delivery: Delivery) -> tuple[str, str, str] | None:
    """The receipt's parts for a queue delivery; None for broadcasts and foreign receipts."""
    if delivery.channel is not None:
        return None
    return parse_receipt(delivery.receipt)


__all__ = ["RedisBroker"]
