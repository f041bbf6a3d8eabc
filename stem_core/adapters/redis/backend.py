"""``RedisBackend``: task statuses, heartbeats, records and the audit log in Redis.

Keys (all under ``<ns>:r{<ns>}:``, one hash tag; ``lua/results_lib.lua`` draws them):

* ``s:<id>`` a HASH per status with a TTL (``PEXPIRE``); ``ix``, ``all``, ``x:<state>``,
  ``q:<queue>``, ``t:<task>`` keep ``list_statuses`` an index walk, newest first, never
  a ``SCAN``; ``exp`` (id -> expiry) lets a bounded prune of ``PRUNE_BATCH`` ids drop
  expired statuses from the indexes, so memory follows the result TTL. A writer prunes
  once per ``PRUNE_INTERVAL_S``, and again at its next write while a prune comes back
  full: statuses expiring faster than one batch a second (a worker at 600 tasks/s with a
  60 s TTL) would otherwise pile up in the indexes, ~330 bytes of server memory per task.
* ``watch`` is pub/sub (``watch.py``): the write and its message are one atomic step.
* Every status write goes through ``results_lib.lua`` with records ``StatusBatch``
  (``statuses.py``) packs: ``set_status`` (``results_set.lua``), ``set_statuses`` (one
  ``results_set_many.lua`` call per ``STATUS_CHUNK``), and a ``RedisBroker`` on the same
  server and database, which writes the statuses in the same script as its own step
  (``Broker.enqueue``, ``Broker.ack_with_status``; see ``shares_server``).
* ``set_status`` calls made in one event-loop turn (the running statuses of a worker's
  claimed batch) are one ``results_set_many.lua`` call, records in call order (a
  repeated id is written twice, in order, like two calls); a lone one is
  ``results_set.lua``. A failed call raises in every caller; a status moving to another
  queue/task index makes the batch do nothing, and each write goes alone. ``close``
  waits for the batches in flight.
* Heartbeats, records and the audit log (``hb:``, ``rec:``, ``audit``) are
  ``RedisRecords`` (``records.py``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, AsyncIterator, ClassVar, Iterable

from ..._aio import UNSENT, TurnBatch
from ...clock import SweepSchedule, parse_iso, utcnow
from ...contract.backend import ResultBackend, StatusWrite
from ...contract.types import TaskState, TaskStatus, WorkerHeartbeat
from ...errors import StemError
from ...settings import DEFAULT_NAMESPACE, HEARTBEAT_TTL_SECONDS, RESULT_TTL_SECONDS
from .codec import text
from .connection import RedisConnection
from .keys import STATES, ResultKeys, to_us
from .records import RedisRecords
from .statuses import STATUS_ARGS, StatusBatch, decode_status, stored
from .url import RedisConfig, parse_url
from .watch import CLOSED, RESYNC, RedisWatchHub
from .wire import resp

log = logging.getLogger("stem.redis")

BACKEND_OPTIONS = {"result_ttl": float, "heartbeat_ttl": float}
# Expired statuses are dropped from the indexes at most this often, this many at a time.
PRUNE_INTERVAL_S = 1.0
PRUNE_BATCH = 200
# Index entries read per round trip while listing.
LIST_CHUNK = 200
# results_set.lua asks again (with the old index keys) at most this many times.
SET_ATTEMPTS = 3
# Statuses per results_set_many.lua call (keeps one script call short).
STATUS_CHUNK = 1000


class RedisBackend(ResultBackend):
    """Result backend for ``redis://`` and ``rediss://`` URLs."""

    scheme: ClassVar[str] = "redis"

    def __init__(self, config: RedisConfig, *, namespace: str = DEFAULT_NAMESPACE,
                 result_ttl: float = RESULT_TTL_SECONDS, heartbeat_ttl: float = HEARTBEAT_TTL_SECONDS) -> None:
        super().__init__(namespace=namespace, result_ttl=result_ttl, heartbeat_ttl=heartbeat_ttl)
        self._conn = RedisConnection(config, role="backend")
        self._hub = RedisWatchHub(self._conn)
        self._keys = keys = ResultKeys(self.namespace)
        # results_lib.lua's status_keys (the same for every status write), for the broker's scripts too.
        self.status_keys: tuple[str, ...] = keys.status_keys
        self.packed_status_keys = keys.packed_status_keys
        self._records = RedisRecords(self._conn, keys)
        self._prune_schedule = SweepSchedule(PRUNE_INTERVAL_S)
        self._pruning = False  # one prune at a time per backend (concurrent writers)
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
            self._hub = RedisWatchHub(self._conn)
        return self

    async def close(self) -> None:
        await self._writes.drain()  # writes of this turn start, those in flight end
        await self._hub.close()
        await self._conn.close()

    async def ping(self) -> None:
        await self._conn.ping()

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
        batch = StatusBatch(self._keys, first_key)
        for write in writes:
            batch.add(write)
        return batch

    async def written(self) -> None:
        """After statuses were written (here or by a broker's script): the throttled prune.
        Never fails the writer: the statuses are stored, and a failed prune runs again."""
        if self._pruning or not self._prune_schedule.due():
            return
        self._pruning = True
        try:
            self._prune_schedule.finished(full=await self._prune() >= PRUNE_BATCH)
        except StemError as exc:
            log.debug("status prune failed (it runs again later): %s", exc)
        finally:
            self._pruning = False

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
                        outcomes[start:start + len(chunk)] = [stored(w, parse_iso(text(c)), stamp)
                                                              for w, c in zip(chunk, created)]
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
        reply = await self._conn.call("results_set_many", [*self.status_keys, *statuses.keys], statuses.args())
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
            layout = self._keys
            keys[len(self.status_keys) + len(batch.keys):] = [layout.queue_index(old_q), layout.task_index(old_t)]
            args[STATUS_ARGS:] = [old_q, old_t]
            reply = await self._conn.call("results_set", keys, args)
            attempts += 1
        return stored(write, parse_iso(text(reply[1])), batch.stamp)

    async def _set_statuses(self, items: list[tuple[str, TaskState, dict[str, Any]]], ttl: float) -> None:
        writes = [StatusWrite(task_id, state, None, None, 0, meta, ttl) for task_id, state, meta in items]
        for start in range(0, len(writes), STATUS_CHUNK):
            chunk = writes[start:start + STATUS_CHUNK]
            if await self._set_many(chunk) is None:
                for write in chunk:
                    await self._set_one(write)
        await self.written()

    async def _prune(self) -> int:
        """Drop up to ``PRUNE_BATCH`` expired statuses; returns how many expired ids it found."""
        now = to_us(utcnow())
        layout = self._keys
        client = self._conn.client
        with self._conn.guard:
            ids = await client.zrangebyscore(layout.expiries, "-inf", now, start=0, num=PRUNE_BATCH)
            if not ids:
                return 0
            marks = await client.hmget(layout.index, ids)
        keys = [layout.index, layout.expiries, layout.all, *layout.states]  # results_prune.lua's first nine
        args: list[Any] = [now]
        for raw_id, mark in zip(ids, marks):
            task_id = text(raw_id)
            _, queue, task = json.loads(mark) if mark is not None else (0, "", "")
            keys += [layout.status(task_id), layout.queue_index(queue), layout.task_index(task)]
            args.append(task_id)
        await self._conn.call("results_prune", keys, args)
        return len(ids)

    async def _read(self, task_id: str) -> tuple[TaskStatus, int] | None:
        with self._conn.guard:
            body, created, version = await self._conn.client.hmget(self._keys.status(task_id), "j", "c", "v")
        if body is None:
            return None
        return decode_status(body, created), int(version or 0)

    async def _get_status(self, task_id: str) -> TaskStatus | None:
        found = await self._read(task_id)
        return found[0] if found is not None else None

    async def _watch(self, task_id: str) -> AsyncIterator[TaskStatus]:
        channel = self._keys.watch_prefix + task_id
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
                    yield decode_status(body, created)
        finally:
            await self._hub.unsubscribe(channel, queue)

    async def _list_statuses(self, state: TaskState | None, queue: str | None, task: str | None,
                             limit: int, offset: int) -> list[TaskStatus]:
        layout = self._keys
        if task is not None:
            index = layout.prefix + "t:" + task
        elif queue is not None:
            index = layout.prefix + "q:" + queue
        elif state is not None:
            index = layout.states[STATES.index(state)]
        else:
            index = layout.all
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
                        pipe.hmget(layout.status(text(raw_id)), "j", "c")
                    rows = await pipe.execute()
            for body, created in rows:
                if body is None:
                    continue  # expired; the prune removes it from the index
                status = decode_status(body, created)
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
            if await client.pexpire(self._keys.status(task_id), ms):
                await client.zadd(self._keys.expiries, {task_id: to_us(utcnow()) + ms * 1000})

    # -- heartbeats, records and audit: RedisRecords -----------------------------------

    async def _set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        await self._records.set_heartbeat(heartbeat, ttl)

    async def _get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        return await self._records.get_heartbeat(worker_id)

    async def _list_heartbeats(self) -> list[WorkerHeartbeat]:
        return await self._records.list_heartbeats()

    async def _put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
        await self._records.put_record(kind, key, value, ttl)

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._records.get_record(kind, key)

    async def _list_records(self, kind: str, since: datetime | None) -> dict[str, dict[str, Any]]:
        return await self._records.list_records(kind, since)

    async def _delete_record(self, kind: str, key: str) -> bool:
        return await self._records.delete_record(kind, key)

    async def _append_audit(self, record: dict[str, Any]) -> None:
        await self._records.append_audit(record, self.audit_retention)

    async def _list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self._records.list_audit(limit, offset)

    async def _get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        return await self._records.get_schedule(schedule_id)

    async def _list_schedules(self) -> list[tuple[int, dict[str, Any]]]:
        return await self._records.list_schedules()

    async def _save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
        return await self._records.save_schedule(schedule_id, doc, version)

    async def _delete_schedule(self, schedule_id: str, version: int | None) -> bool:
        return await self._records.delete_schedule(schedule_id, version)


class SharedBackend:
    """Finds the result backend that shares a broker's server and database, whose
    statuses the broker's fused scripts then write (the last one found is remembered and
    checked by identity: a worker passes the same backend every time)."""

    __slots__ = ("_config", "_last")

    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._last: RedisBackend | None = None

    def find(self, backend: ResultBackend) -> RedisBackend | None:
        if backend is self._last and backend.is_open:
            return backend
        if isinstance(backend, RedisBackend) and backend.shares_server(self._config):
            self._last = backend
            return backend
        return None


__all__ = ["RedisBackend", "SharedBackend"]
