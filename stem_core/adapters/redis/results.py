"""``RedisBackend``: task statuses, heartbeats, records and the audit log in Redis.

Keys (all under ``<ns>:r{<ns>}:``, one hash tag; ``lua/results_lib.lua`` draws them):

* ``s:<id>`` a HASH per status with a TTL (``PEXPIRE``); ``ix``, ``all``, ``x:<state>``,
  ``q:<queue>``, ``t:<task>`` keep ``list_statuses`` an index walk, newest first, never
  a ``SCAN``; ``exp`` (id -> expiry) lets a bounded prune, at most once per
  ``PRUNE_INTERVAL_S`` and ``PRUNE_BATCH`` ids, drop expired statuses from the indexes, so
  memory follows the result TTL.
* ``watch`` is pub/sub (``watch.py``): the write and its message are one atomic step.
* Every status write goes through ``results_lib.lua`` with records ``StatusBatch``
  packs: ``set_status`` (``results_set.lua``), ``set_statuses`` (one
  ``results_set_many.lua`` call per ``STATUS_CHUNK``), and a ``RedisBroker`` on the same
  server and database, which writes the statuses in the same script as its own step
  (``Broker.enqueue``, ``Broker.ack_with_status``; see ``shares_server``).
* ``set_status`` calls made in one event-loop turn (the running statuses of a worker's
  claimed batch) are one ``results_set_many.lua`` call, records in call order (a
  repeated id is written twice, in order, like two calls); a lone one is
  ``results_set.lua``. A failed call raises in every caller; a status moving to another
  queue/task index makes the batch do nothing, and each write goes alone. ``close``
  waits for the batches in flight.
* ``hb:<worker>`` expires by itself (``PX``); ``hbs`` (worker -> expiry) lists live ones.
* ``rec:<kind>`` / ``recx:<kind>`` hold records and the expiry of those with a TTL;
  ``audit`` is a capped list, newest first.
"""

from __future__ import annotations

import logging
import json
from datetime import datetime
from typing import Any, AsyncIterator, ClassVar, Iterable

from ..._aio import UNSENT, TurnBatch
from ...clock import monotonic, parse_iso, to_iso, utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.types import TaskState, TaskStatus, WorkerHeartbeat
from ...errors import StemError
from ...settings import DEFAULT_NAMESPACE, HEARTBEAT_TTL_SECONDS, RESULT_TTL_SECONDS
from .codec import dumps, text
from .connection import Connection, RedisConfig, parse_url, resp
from .keys import results_prefix, to_us
from .watch import CLOSED, RESYNC, WatchHub

log = logging.getLogger("stem.redis")

BACKEND_OPTIONS = {"result_ttl": float, "heartbeat_ttl": float}
STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRIED,
          TaskState.CANCELLED)  # results_set.lua's order
# Expired statuses are dropped from the indexes at most this often, this many at a time.
PRUNE_INTERVAL_S = 1.0
PRUNE_BATCH = 200
# Index entries read per round trip while listing.
LIST_CHUNK = 200
# results_set.lua asks again (with the old index keys) at most this many times.
SET_ATTEMPTS = 3
# Statuses per results_set_many.lua call (keeps one script call short).
STATUS_CHUNK = 1000
# StatusBatch.args(): records, updated ISO, updated us, watch channel prefix.
STATUS_ARGS = 4
STATE_INDEX = {state: k + 1 for k, state in enumerate(STATES)}  # results_lib.lua's state index
# The audit log keeps this many newest records.
AUDIT_MAX_ENTRIES = 100_000


class RedisBackend(ResultBackend):
    """Result backend for ``redis://`` and ``rediss://`` URLs."""

    scheme: ClassVar[str] = "redis"

    def __init__(self, config: RedisConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 result_ttl: float = RESULT_TTL_SECONDS, heartbeat_ttl: float = HEARTBEAT_TTL_SECONDS) -> None:
        super().__init__(namespace=namespace, result_ttl=result_ttl, heartbeat_ttl=heartbeat_ttl)
        self._conn = Connection(config, role="backend")
        self._hub = WatchHub(self._conn)
        p = self._p = results_prefix(self.namespace)
        self._ix, self._exp, self._all, self._ver = p + "ix", p + "exp", p + "all", p + "ver"
        self._state_keys = [p + "x:" + s.value for s in STATES]
        # results_lib.lua's status_keys, the same for every status write.
        self.status_keys: tuple[str, ...] = (self._ix, self._exp, self._all, *self._state_keys, self._ver)
        self.packed_status_keys = resp(*self.status_keys)
        self._watch_prefix = p + "w:"
        self._hbs = p + "hbs"
        self._audit = p + "audit"
        self._last_prune = 0.0
        # Status writes made in one event-loop turn go out together.
        self._writes: TurnBatch[StatusWrite] = TurnBatch(self._write_batch)

    @classmethod
    def from_url(cls, url: str, *, namespace: str = DEFAULT_NAMESPACE, **options: Any) -> "RedisBackend":
        config = parse_url(url, options, BACKEND_OPTIONS)
        return cls(config, namespace=namespace, **config.options)

    def __repr__(self) -> str:
        return f"RedisBackend({self._conn.shown_url!r}, namespace={self.namespace!r})"

    async def connect(self) -> "RedisBackend":
        await self._conn.open()
        if self._hub.closed:
            self._hub = WatchHub(self._conn)
        return self

    async def close(self) -> None:
        await self._writes.drain()  # writes of this turn start, those in flight end
        await self._hub.close()
        await self._conn.close()

    async def ping(self) -> None:
        with self._conn.guard:
            await self._conn.client.ping()

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._conn.call(name, keys, args)

    # -- statuses -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    def shares_server(self, config: RedisConfig) -> bool:
        """Whether a client made from ``config`` reaches this backend's server and
        database (a ``RedisBroker`` then writes statuses in its own scripts)."""
        return self._conn.is_open and config.client == self._conn.config.client

    def status_batch(self, first_key: int, writes: Iterable[StatusWrite]) -> "StatusBatch":
        """A ``StatusBatch`` of ``writes`` (in order) whose keys start at KEYS position
        ``first_key`` of a script."""
        batch = StatusBatch(self, first_key)
        for write in writes:
            batch.add(write)
        return batch

    async def written(self) -> None:
        """After statuses were written (here or by a broker's script): the throttled prune.
        Never fails the writer: the statuses are stored, and a failed prune runs again."""
        if monotonic() - self._last_prune >= PRUNE_INTERVAL_S:
            self._last_prune = monotonic()
            try:
                await self._prune()
            except StemError as exc:
                log.debug("status prune failed (it runs again later): %s", exc)

    async def _set_status(self, task_id: str, state: TaskState, *, payload: Any, error: dict[str, Any] | None,
                          attempt: int, meta: dict[str, Any], ttl: float) -> TaskStatus:
        if not self._conn.is_open:
            raise self._conn.unavailable(f"the Redis backend for {self._conn.shown_url} is closed")
        return await self._writes.add(StatusWrite(task_id, state, payload, error, attempt, meta, ttl))

    async def _write_batch(self, batch: list[StatusWrite]) -> list[Any]:
        """Send the status writes made during one event-loop turn together: the running
        statuses of a worker's claimed batch start in the same turn, so they cost one
        script call instead of one each. A lone write goes out alone, no later.
        Outcomes: each stored TaskStatus, or the error of that write (the server being
        unreachable fails every write not yet stored)."""
        outcomes: list[Any] = [UNSENT] * len(batch)
        try:
            if len(batch) == 1:
                outcomes[0] = await self._set_one(batch[0])
            else:
                # results_set_many.lua writes the records in call order within one script, so
                # a batch repeating a task id needs no split: the later write wins, and keeps
                # the earlier one's created_at, exactly as one call after the other.
                for start in range(0, len(batch), STATUS_CHUNK):
                    chunk = batch[start:start + STATUS_CHUNK]
                    written = await self._set_many(chunk)
                    if written is not None:
                        created, stamp = written
                        stored = [_stored(w, parse_iso(text(c)), stamp) for w, c in zip(chunk, created)]
                        outcomes[start:start + len(chunk)] = stored
                        continue
                    for k, write in enumerate(chunk, start):
                        try:
                            outcomes[k] = await self._set_one(write)
                        except StemError as exc:
                            if isinstance(exc, self._conn.unavailable):
                                raise
                            outcomes[k] = exc
        except StemError as exc:
            return [exc if outcome is UNSENT else outcome for outcome in outcomes]
        await self.written()
        return outcomes

    async def _set_many(self, writes: list[StatusWrite]) -> tuple[list[Any], datetime] | None:
        """Up to ``STATUS_CHUNK`` statuses in one results_set_many.lua call, in order: the
        created_at of each as the server sent it, and updated_at. None when one of them
        moves to another queue/task index: nothing was written, and the caller writes
        them one by one (``_set_one``, in call order), each naming its old index keys
        when told them."""
        statuses = self.status_batch(1 + len(self.status_keys), writes)
        reply = await self._run("results_set_many", [*self.status_keys, *statuses.keys], statuses.args())
        return (reply[1:], statuses.stamp) if reply[0] == 1 else None

    async def _set_one(self, write: StatusWrite) -> TaskStatus:
        """One status through ``results_set.lua`` (asking again with the old index keys
        while the status moves to another queue/task index)."""
        task_id = write.task_id
        batch = self.status_batch(1 + len(self.status_keys), [write])
        args = batch.args()
        reply = await self._conn.evalsha("results_set", len(self.status_keys) + len(batch.keys), STATUS_ARGS,
                                         b"".join((self.packed_status_keys, resp(*batch.keys), resp(*args))))
        keys = [*self.status_keys, *batch.keys]
        attempts = 1
        while reply[0] != 1:
            if attempts >= SET_ATTEMPTS:
                raise StemError(f"status {task_id!r} kept changing queue while being written; try again")
            # The status moves to another queue/task index: name the old keys and go again.
            old_q, old_t = text(reply[1]), text(reply[2])
            p = self._p
            keys[len(self.status_keys) + len(batch.keys):] = [p + "q:" + old_q if old_q else self._all,
                                                             p + "t:" + old_t if old_t else self._all]
            args[STATUS_ARGS:] = [old_q, old_t]
            reply = await self._run("results_set", keys, args)
            attempts += 1
        return _stored(write, parse_iso(text(reply[1])), batch.stamp)

    async def _set_statuses(self, items: list[tuple[str, TaskState, dict[str, Any]]], ttl: float) -> None:
        writes = [StatusWrite(task_id, state, None, None, 0, meta, ttl) for task_id, state, meta in items]
        for start in range(0, len(writes), STATUS_CHUNK):
            chunk = writes[start:start + STATUS_CHUNK]
            if await self._set_many(chunk) is None:
                for write in chunk:
                    await self._set_one(write)
        await self.written()

    async def _prune(self) -> None:
        now = to_us(utcnow())
        client = self._conn.client
        with self._conn.guard:
            ids = await client.zrangebyscore(self._exp, "-inf", now, start=0, num=PRUNE_BATCH)
            if not ids:
                return
            marks = await client.hmget(self._ix, ids)
        p = self._p
        keys = [self._ix, self._exp, self._all, *self._state_keys]  # results_prune.lua's first nine
        args: list[Any] = [now]
        for raw_id, mark in zip(ids, marks):
            task_id = text(raw_id)
            _, queue, task = json.loads(mark) if mark is not None else (0, "", "")
            keys += [p + "s:" + task_id, p + "q:" + queue if queue else self._all, p + "t:" + task if task else self._all]
            args.append(task_id)
        await self._run("results_prune", keys, args)

    async def _read(self, task_id: str) -> tuple[TaskStatus, int] | None:
        with self._conn.guard:
            body, created, version = await self._conn.client.hmget(self._p + "s:" + task_id, "j", "c", "v")
        if body is None:
            return None
        return _decode(body, created), int(version or 0)

    async def _get_status(self, task_id: str) -> TaskStatus | None:
        found = await self._read(task_id)
        return found[0] if found is not None else None

    async def _watch(self, task_id: str) -> AsyncIterator[TaskStatus]:
        channel = self._watch_prefix + task_id
        queue = await self._hub.subscribe(channel)
        try:
            seen = 0
            current = await self._read(task_id)
            if current is not None:
                seen = current[1]
                yield current[0]
            while True:
                item = await queue.get()
                if item is CLOSED:
                    raise self._conn.unavailable(f"the Redis result backend for {self._conn.shown_url} is closed")
                if item is RESYNC:
                    try:
                        current = await self._read(task_id)
                    except self._conn.unavailable:
                        continue  # still down: the hub sends another RESYNC once it is back
                    if current is not None and current[1] > seen:
                        seen = current[1]
                        yield current[0]
                    continue
                version, created, body = bytes(item).split(b"\n", 2)
                if int(version) > seen:
                    seen = int(version)
                    yield _decode(body, created)
        finally:
            await self._hub.unsubscribe(channel, queue)

    async def _list_statuses(self, state: TaskState | None, queue: str | None, task: str | None,
                             limit: int, offset: int) -> list[TaskStatus]:
        p = self._p
        if task is not None:
            index = p + "t:" + task
        elif queue is not None:
            index = p + "q:" + queue
        elif state is not None:
            index = self._state_keys[STATES.index(state)]
        else:
            index = self._all
        out: list[TaskStatus] = []
        skipped = 0
        start = 0
        chunk = min(1000, max(LIST_CHUNK, offset + limit))
        client = self._conn.client
        while len(out) < limit:
            with self._conn.guard:
                ids = await client.zrevrange(index, start, start + chunk - 1)
                if not ids:
                    break
                async with client.pipeline(transaction=False) as pipe:
                    for raw_id in ids:
                        pipe.hmget(p + "s:" + text(raw_id), "j", "c")
                    rows = await pipe.execute()
            for body, created in rows:
                if body is None:
                    continue  # expired; the prune removes it from the index
                status = _decode(body, created)
                if (state is not None and status.state != state) or (queue is not None and status.meta.get("queue") != queue) \
                        or (task is not None and status.meta.get("task") != task):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(status)
                if len(out) >= limit:
                    break
            start += len(ids)
        return out

    async def _expire(self, task_id: str, ttl: float) -> None:
        ms = max(1, int(ttl * 1000))
        client = self._conn.client
        with self._conn.guard:
            if await client.pexpire(self._p + "s:" + task_id, ms):
                await client.zadd(self._exp, {task_id: to_us(utcnow()) + ms * 1000})

    # -- heartbeats -----------------------------------------------------------------

    async def _set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        ms = max(1, int(ttl * 1000))
        now = to_us(utcnow())
        body = dumps(heartbeat.to_dict())
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.set(self._p + "hb:" + heartbeat.worker_id, body, px=ms)
                pipe.zadd(self._hbs, {heartbeat.worker_id: now + ms * 1000})
                pipe.zremrangebyscore(self._hbs, "-inf", now)
                await pipe.execute()

    async def _get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        with self._conn.guard:
            raw = await self._conn.client.get(self._p + "hb:" + worker_id)
        return WorkerHeartbeat.from_dict(json.loads(raw)) if raw is not None else None

    async def _list_heartbeats(self) -> list[WorkerHeartbeat]:
        client = self._conn.client
        with self._conn.guard:
            ids = await client.zrangebyscore(self._hbs, f"({to_us(utcnow())}", "+inf")
            raws = await client.mget([self._p + "hb:" + text(i) for i in ids]) if ids else []
        beats = [WorkerHeartbeat.from_dict(json.loads(raw)) for raw in raws if raw is not None]
        return sorted(beats, key=lambda hb: hb.worker_id)

    # -- records and audit ----------------------------------------------------------

    def _record_keys(self, kind: str) -> list[str]:
        return [self._p + "rec:" + kind, self._p + "recx:" + kind]

    async def _put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
        records, expiries = self._record_keys(kind)
        body = dumps(value)
        now = to_us(utcnow())
        client = self._conn.client
        with self._conn.guard:
            script = self._conn.script("results_records_prune")
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(records, key, body)
                if ttl is not None:
                    pipe.zadd(expiries, {key: now + int(ttl * 1_000_000)})
                else:
                    pipe.zrem(expiries, key)
                await script(keys=[records, expiries], args=[now], client=pipe)
                await pipe.execute()

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        records, expiries = self._record_keys(kind)
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.hget(records, key)
                pipe.zscore(expiries, key)
                raw, expiry = await pipe.execute()
        if raw is None or (expiry is not None and expiry <= to_us(utcnow())):
            return None
        return json.loads(raw)

    async def _list_records(self, kind: str) -> dict[str, dict[str, Any]]:
        records, expiries = self._record_keys(kind)
        now = to_us(utcnow())
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(records)
                pipe.zrangebyscore(expiries, "-inf", now)
                rows, expired = await pipe.execute()
        gone = {text(k) for k in expired}
        live = {text(k): json.loads(v) for k, v in rows.items() if text(k) not in gone}
        return dict(sorted(live.items()))

    async def _delete_record(self, kind: str, key: str) -> bool:
        records, expiries = self._record_keys(kind)
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.zscore(expiries, key)
                pipe.hdel(records, key)
                pipe.zrem(expiries, key)
                expiry, deleted, _ = await pipe.execute()
        return bool(deleted) and (expiry is None or expiry > to_us(utcnow()))

    async def _append_audit(self, record: dict[str, Any]) -> None:
        body = dumps(record)
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.lpush(self._audit, body)
                pipe.ltrim(self._audit, 0, AUDIT_MAX_ENTRIES - 1)
                await pipe.execute()

    async def _list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        if limit == 0:
            return []
        with self._conn.guard:
            rows = await self._conn.client.lrange(self._audit, offset, offset + limit - 1)
        return [json.loads(r) for r in rows]


class StatusBatch:
    """Status writes for one script call, packed as results_lib.lua's records: the one
    place a status is encoded for Redis (``set_status``, ``set_statuses`` and the
    broker's ``enqueue_with.lua``/``ack_with.lua`` all use it).

    ``keys`` are the keys the records name, numbered from KEYS position ``first_key``
    (each queue/task index key once); ``args()`` the records, the updated_at stamp (one per batch) and the
    watch channel prefix, the arguments every status-writing script takes in that order.
    """

    __slots__ = ("stamp", "iso", "keys", "_backend", "_first", "_labels", "_parts")

    def __init__(self, backend: RedisBackend, first_key: int) -> None:
        self.stamp: datetime = utcnow()
        self.iso = to_iso(self.stamp)
        self.keys: list[str] = []
        self._backend = backend
        self._first = first_key
        # (queue, task) -> the records' "<q>,<t>," key positions and the labels, encoded
        # (a batch's statuses mostly share them; each index key is passed once).
        self._labels: dict[tuple[str, str], tuple[str, bytes, bytes]] = {}
        self._parts: list[bytes] = []

    def _key(self, key: str) -> int:
        self.keys.append(key)
        return self._first + len(self.keys) - 1

    def add(self, write: StatusWrite) -> None:
        p = self._backend._p
        task_id, state, meta = write.task_id, write.state, write.meta
        status = TaskStatus(id=task_id, state=state, payload=write.payload, error=write.error, attempt=write.attempt,
                            meta=meta)
        fields = status.to_dict()
        fields["updated_at"] = self.iso  # formatted once per batch
        body = dumps(fields).encode()
        ident = task_id.encode()
        labels = (_label(meta.get("queue")), _label(meta.get("task")))
        known = self._labels.get(labels)
        if known is None:
            queue, task = labels
            at = f"{self._key(p + 'q:' + queue) if queue else 0},{self._key(p + 't:' + task) if task else 0},"
            known = self._labels[labels] = (at, queue.encode(), task.encode())
        at, q, t = known
        head = (f"{STATE_INDEX[state]},{self._key(p + 's:' + task_id)},{at}{max(1, int(write.ttl * 1000))},"
                f"{len(ident)},{len(body)},{len(q)},{len(t)}:")
        self._parts += (head.encode(), ident, body, q, t)

    def args(self) -> list[Any]:
        return [b"".join(self._parts), self.iso, to_us(self.stamp), self._backend._watch_prefix]


def _stored(write: StatusWrite, created_at: datetime, updated_at: datetime) -> TaskStatus:
    """What ``set_status`` returns for ``write``, stored with these timestamps."""
    return TaskStatus(id=write.task_id, state=write.state, payload=write.payload, error=write.error,
                      attempt=write.attempt, meta=write.meta, created_at=created_at, updated_at=updated_at)


def _label(value: Any) -> str:
    """An index label from a meta value: strings only ('' = not indexed)."""
    return value if isinstance(value, str) else ""


def _decode(body: bytes | str, created: bytes | str | None) -> TaskStatus:
    data = json.loads(body)
    data["created_at"] = text(created) if created is not None else data.get("updated_at")
    return TaskStatus.from_dict(data)


__all__ = ["RedisBackend"]
