"""``RedisRecords``: what ``RedisBackend`` keeps besides statuses: worker heartbeats,
named records (``Worker`` registrations, schedules, pauses) and the audit log.

* ``hb:<worker>`` expires by itself (``PX``); ``hbs`` (worker -> expiry) lists live ones.
* ``rec:<kind>`` / ``recx:<kind>`` / ``recw:<kind>`` hold records, the expiry of those
  with a TTL and when each was last put (``list_records(since=...)`` reads only the new
  ones); ``results_records_prune.lua`` drops a bounded batch of expired ones with every
  write;
* ``audit`` is a capped list, newest first, pruned of records older than the retention
  (``results_audit_append.lua``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ...clock import to_iso, utcnow
from ...contract.types import WorkerHeartbeat, decode_heartbeat
from ...settings import AUDIT_PRUNE_BATCH, PRUNE_BATCH
from .codec import dumps, text
from .connection import RedisConnection
from .keys import ResultKeys, to_us

# The audit log keeps this many newest records.
AUDIT_MAX_ENTRIES = 100_000


class RedisRecords:
    """Heartbeats, records and the audit log of one namespace."""

    def __init__(self, conn: RedisConnection, keys: ResultKeys) -> None:
        self._conn = conn
        self._keys = keys

    async def set_heartbeat(self, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        ms = max(1, int(ttl * 1000))
        now = to_us(utcnow())
        body = dumps(heartbeat.to_dict())
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.set(self._keys.heartbeat(heartbeat.worker_id), body, px=ms)
                pipe.zadd(self._keys.heartbeats, {heartbeat.worker_id: now + ms * 1000})
                pipe.zremrangebyscore(self._keys.heartbeats, "-inf", now)
                await pipe.execute()

    async def get_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        with self._conn.guard:
            raw = await self._conn.client.get(self._keys.heartbeat(worker_id))
        return decode_heartbeat(raw) if raw is not None else None

    async def list_heartbeats(self) -> list[WorkerHeartbeat]:
        client = self._conn.client
        with self._conn.guard:
            ids = await client.zrangebyscore(self._keys.heartbeats, f"({to_us(utcnow())}", "+inf")
            raws = await client.mget([self._keys.heartbeat(text(i)) for i in ids]) if ids else []
        beats = [hb for hb in (decode_heartbeat(raw) for raw in raws if raw is not None) if hb is not None]
        return sorted(beats, key=lambda hb: hb.worker_id)

    async def put_record(self, kind: str, key: str, value: dict[str, Any], ttl: float | None) -> None:
        records, expiries, written = keys = self._keys.records(kind)
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
                pipe.zadd(written, {key: now})
                await script(keys=keys, args=[now, PRUNE_BATCH], client=pipe)
                await pipe.execute()

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        records, expiries, _ = self._keys.records(kind)
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.hget(records, key)
                pipe.zscore(expiries, key)
                raw, expiry = await pipe.execute()
        if raw is None or (expiry is not None and expiry <= to_us(utcnow())):
            return None
        return json.loads(raw)

    async def list_records(self, kind: str, since: datetime | None = None) -> dict[str, dict[str, Any]]:
        records, expiries, written = self._keys.records(kind)
        now = to_us(utcnow())
        client = self._conn.client
        with self._conn.guard:
            if since is None:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.hgetall(records)
                    pipe.zrangebyscore(expiries, "-inf", now)
                    rows, expired = await pipe.execute()
            else:
                fresh = await client.zrangebyscore(written, to_us(since), "+inf")
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zrangebyscore(expiries, "-inf", now)
                    if fresh:
                        pipe.hmget(records, fresh)
                    expired, *bodies = await pipe.execute()
                rows = {k: v for k, v in zip(fresh, bodies[0] if bodies else []) if v is not None}
        gone = {text(k) for k in expired}
        live = {text(k): json.loads(v) for k, v in rows.items() if text(k) not in gone}
        return dict(sorted(live.items()))

    async def delete_record(self, kind: str, key: str) -> bool:
        records, expiries, written = self._keys.records(kind)
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.zscore(expiries, key)
                pipe.hdel(records, key)
                pipe.zrem(expiries, key)
                pipe.zrem(written, key)
                expiry, deleted, _, _ = await pipe.execute()
        return bool(deleted) and (expiry is None or expiry > to_us(utcnow()))

    async def append_audit(self, record: dict[str, Any], retention: float) -> None:
        body = dumps(record)
        cutoff = to_iso(utcnow() - timedelta(seconds=retention))
        await self._conn.call("results_audit_append", [self._keys.audit], [body, AUDIT_MAX_ENTRIES, cutoff, AUDIT_PRUNE_BATCH])

    async def list_audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        if limit == 0:
            return []
        with self._conn.guard:
            rows = await self._conn.client.lrange(self._keys.audit, offset, offset + limit - 1)
        return [json.loads(r) for r in rows]

    # -- schedules ------------------------------------------------------------------

    async def get_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.hget(self._keys.schedule_versions, schedule_id)
                pipe.hget(self._keys.schedules, schedule_id)
                version, raw = await pipe.execute()
        return (int(version), json.loads(raw)) if version is not None and raw is not None else None

    async def list_schedules(self) -> list[tuple[int, dict[str, Any]]]:
        with self._conn.guard:
            async with self._conn.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._keys.schedule_versions)
                pipe.hgetall(self._keys.schedules)
                versions, docs = await pipe.execute()
        versions = {text(k): int(v) for k, v in versions.items()}
        rows = sorted((text(k), v) for k, v in docs.items() if text(k) in versions)
        return [(versions[key], json.loads(raw)) for key, raw in rows]

    async def save_schedule(self, schedule_id: str, doc: dict[str, Any], version: int | None) -> int | None:
        keys = [self._keys.schedules, self._keys.schedule_versions]
        new = await self._conn.call("results_schedule_save", keys, [schedule_id, "" if version is None else str(version), dumps(doc)])
        return int(new) if new is not None else None

    async def delete_schedule(self, schedule_id: str, version: int | None) -> bool:
        keys = [self._keys.schedules, self._keys.schedule_versions]
        return bool(await self._conn.call("results_schedule_delete", keys, [schedule_id, "" if version is None else str(version)]))


__all__ = ["AUDIT_MAX_ENTRIES", "RedisRecords"]
