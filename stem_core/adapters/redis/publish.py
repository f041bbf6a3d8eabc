"""``RedisPublisher``: messages into a queue's streams, and the fused enqueue.

* One stream per (queue, priority band 0..9), each with the consumer group ``stem``;
  publishing a ready message to a known queue is a bare ``XADD`` (the enqueued total is
  derived from the streams' ``entries-added``, see ``lib.lua``); delayed messages and
  batches travel as one packed argument of ``publish.lua``; a batch spanning queues is
  one ``MULTI``/``EXEC`` of those calls, all or nothing. A queue's first publish adds
  its name to the namespace's registry (``SADD``), which ``list_queues`` reads; control
  reply queues (``REPLY_QUEUE_PREFIX``) never are, and their keys expire
  ``REPLY_QUEUE_TTL_SECONDS`` after the last reply (the client deletes them sooner).
* With a ``RedisBackend`` on the same server and database (same connection settings),
  ``Broker.enqueue`` is one script on the broker's client (``enqueue_with.lua``: queued
  statuses then the messages), sharing the status code of ``results_lib.lua`` and the
  publish code of ``lib.lua``. It touches keys of two hash tags (the queue's and the
  result namespace's), so like multi-queue claims it needs a standalone or Sentinel
  server, which is what Stem supports. A status that moves to another queue/task index
  makes it do nothing, and the two steps run instead.
"""

from __future__ import annotations

from typing import Any

from ...clock import utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...envelope import Envelope
from ...settings import REPLY_QUEUE_PREFIX, REPLY_QUEUE_TTL_SECONDS
from .backend import SharedBackend
from .codec import due_us, lease_ms, ready_us
from .connection import RedisConnection
from .keys import BLOCK_SIZE, KeyCache
from .wire import resp

# Messages per publish.lua call (keeps one script call short); a larger enqueue takes
# the two steps.
PUBLISH_CHUNK = 1000


class RedisPublisher:
    """Publishing for one namespace: ``publish``/``publish_many`` and the fused enqueue."""

    def __init__(self, conn: RedisConnection, keys: KeyCache, registry: str, shared: SharedBackend) -> None:
        self._conn = conn
        self._keys = keys
        self._registry = registry
        self._shared = shared
        # Queues this process already added to the registry.
        self._known: set[str] = set()

    async def publish(self, envelopes: list[Envelope]) -> None:
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
        # Control reply queues are one-shot plumbing: never registered (every overview
        # scans the registry), and their keys expire by themselves (``expire_replies``).
        new = [q for q in groups if q not in self._known and not is_reply_queue(q)]
        replies = [q for q in groups if is_reply_queue(q)]
        client = self._conn.client
        with self._conn.guard:
            if new:
                await client.sadd(self._registry, *new)
            calls = [(q, envs[i:i + PUBLISH_CHUNK]) for q, envs in groups.items() for i in range(0, len(envs), PUBLISH_CHUNK)]
            if len(calls) == 1:
                queue, chunk = calls[0]
                await self._conn.call("publish", self._keys(queue), (records(chunk),))
            else:
                # Several queues (or a huge batch): all-or-nothing in one MULTI/EXEC.
                script = self._conn.script("publish")
                async with client.pipeline(transaction=True) as pipe:
                    for queue, chunk in calls:
                        await script(keys=self._keys(queue), args=[records(chunk)], client=pipe)
                    await pipe.execute()
            if replies:
                await expire_replies(client, self._keys, replies)
        self._known.update(new)

    async def enqueue_with(self, backend: ResultBackend, envelopes: list[Envelope], writes: list[StatusWrite]) -> bool:
        shared = self._shared.find(backend)
        if shared is None or len(envelopes) > PUBLISH_CHUNK or any(is_reply_queue(e.queue) for e in envelopes):
            return False  # reply queues take publish(), which keeps them out of the registry
        groups: dict[str, list[Envelope]] = {}
        for env in envelopes:
            groups.setdefault(env.queue, []).append(env)
        packed = [resp(self._registry), shared.packed_status_keys]
        publish: list[Any] = []
        for queue, envs in groups.items():
            packed.append(self._keys.of(queue).packed_block)
            publish += ("" if queue in self._known else queue, records(envs))
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


def is_reply_queue(queue: str) -> bool:
    return queue.startswith(REPLY_QUEUE_PREFIX)


async def expire_replies(client: Any, keys: KeyCache, queues: list[str]) -> None:
    """Let the keys of control reply ``queues`` expire ``REPLY_QUEUE_TTL_SECONDS`` after
    their last reply: the backstop for a client that never deleted them."""
    ms = int(REPLY_QUEUE_TTL_SECONDS * 1000)
    async with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            for key in keys.of(queue).block:
                pipe.pexpire(key, ms)
        await pipe.execute()


def records(envelopes: list[Envelope]) -> bytes:
    """publish.lua's one argument: ``<due>,<band>,<ready>,<lease>,<id len>,<json len>:<id><json>`` each."""
    parts: list[bytes] = []
    for env in envelopes:
        body = env.to_json().encode()
        ident = env.id.encode()
        head = f"{due_us(env)},{env.priority},{ready_us(env)},{lease_ms(env)},{len(ident)},{len(body)}:"
        parts += (head.encode(), ident, body)
    return b"".join(parts)


__all__ = ["PUBLISH_CHUNK", "RedisPublisher", "records"]
