"""``RedisDeadLetters``: listing, reading, replaying and purging a queue's dead letters.

A queue's dead letters are a ZSET by ``dead_at`` (``dead``) and their stored text by
envelope id (``deadbody``), written by the consumer's ``dead.lua``. Replay moves the
chosen ones back in one ``replay.lua`` call (the filter is the contract's
``Broker.matches_replay``, the new envelope its ``Broker.replayed_envelope``); purge
runs as repeated bounded ``dlq_purge.lua`` calls so Redis never blocks for long.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...clock import utcnow
from ...contract.broker import Broker
from ...contract.types import DeadLetterEntry, DeadLetterPage, ReplayResult
from .codec import decode_dead_letter, lease_ms, ready_us, text
from .connection import RedisConnection
from .keys import DEADBODY_INDEX, DEAD_INDEX, KeyCache, to_us

# Dead letters one dlq_purge.lua call deletes at most.
PURGE_BATCH = 1000
# Dead letters read per round trip while choosing what to replay.
REPLAY_READ_CHUNK = 500


class RedisDeadLetters:
    """The dead letters of one namespace's queues."""

    def __init__(self, conn: RedisConnection, keys: KeyCache) -> None:
        self._conn = conn
        self._keys = keys

    async def page(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        keys = self._keys(queue)
        client = self._conn.client
        with self._conn.guard:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zrevrange(keys[DEAD_INDEX], offset, offset + limit - 1)
                pipe.zcard(keys[DEAD_INDEX])
                ids, total = await pipe.execute()
            bodies = await client.hmget(keys[DEADBODY_INDEX], ids) if ids and limit > 0 else []
        entries = [decode_dead_letter(raw, queue) for raw in bodies if raw is not None]
        end = offset + len(ids) if limit > 0 else offset
        return DeadLetterPage(entries=entries, next_offset=end if end < total and limit > 0 else None)

    async def get(self, queue: str, id: str) -> DeadLetterEntry | None:
        with self._conn.guard:
            raw = await self._conn.client.hget(self._keys(queue)[DEADBODY_INDEX], id)
        return decode_dead_letter(raw, queue) if raw is not None else None

    async def replay(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                     dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        picked = await self._pick(queue, limit, since, ids, task)
        if dry_run or not picked:
            return ReplayResult(entries=[entry for entry, _ in picked], dry_run=dry_run)
        now = utcnow()
        args: list[Any] = [len(picked)]
        for entry, raw in picked:
            env = Broker.replayed_envelope(entry.envelope, delay, now=now, queue=queue)
            due = to_us(env.not_before) if env.not_before is not None else 0
            args.extend([env.id, raw, env.to_json(), ready_us(env), due, env.priority, lease_ms(env)])
        moved = {text(i) for i in await self._conn.call("replay", self._keys(queue), args)}
        return ReplayResult(entries=[entry for entry, _ in picked if entry.envelope.id in moved], dry_run=False)

    async def _pick(self, queue: str, limit: int, since: datetime | None, ids: set[str] | None,
                    task: str | None) -> list[tuple[DeadLetterEntry, bytes]]:
        """Up to ``limit`` matching dead letters, oldest first, with their stored text."""
        keys = self._keys(queue)
        client = self._conn.client
        low = str(to_us(since)) if since is not None else "-inf"
        picked: list[tuple[DeadLetterEntry, bytes]] = []
        offset = 0
        while len(picked) < limit:
            with self._conn.guard:
                chunk = await client.zrangebyscore(keys[DEAD_INDEX], low, "+inf", start=offset, num=REPLAY_READ_CHUNK)
                bodies = await client.hmget(keys[DEADBODY_INDEX], chunk) if chunk else []
            for raw in bodies:
                if raw is None:
                    continue
                entry = decode_dead_letter(raw, queue)
                if Broker.matches_replay(entry, since, ids, task):
                    picked.append((entry, raw))
                    if len(picked) >= limit:
                        break
            if len(chunk) < REPLAY_READ_CHUNK:
                break
            offset += len(chunk)
        return picked

    async def purge(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        low = str(to_us(since)) if since is not None else "-inf"
        total = 0
        while limit is None or total < limit:
            want = PURGE_BATCH if limit is None else min(PURGE_BATCH, limit - total)
            n = int(await self._conn.call("dlq_purge", self._keys(queue), [low, want]))
            total += n
            if n < want:
                break
        return total


__all__ = ["RedisDeadLetters"]
