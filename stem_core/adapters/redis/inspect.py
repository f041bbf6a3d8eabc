"""Inspecting and repairing queues of ``RedisBroker``: stats, peek, requeue, remove,
purge and dead letters.

``queue_stats`` reads ``XLEN``/``XPENDING``/``ZCARD``/``ZCOUNT`` and one entry per band,
so it costs the same for 10 messages and for a million. Long operations (purge, dead
letter purge) run as repeated bounded scripts so Redis never blocks for long.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ...clock import utcnow
from ...contract.types import DeadLetterEntry, DeadLetterPage, MessageInfo, QueueStats, ReplayResult
from ...envelope import Envelope
from .codec import decode, decode_dead_letter, lease_ms, ready_us, text
from .keys import BANDS, DEADBODY_INDEX, DEAD_INDEX, from_us, to_us

if TYPE_CHECKING:
    from .connection import Connection
    from .keys import KeyCache

# Messages (or dead letters) one repair script deletes at most per call.
REPAIR_BATCH = 1000
# Dead letters read per round trip while choosing what to replay.
REPLAY_READ_CHUNK = 500
# Due delayed messages a peek considers (as a claim would).
PEEK_DUE_SCAN = 256


class InspectMixin:
    """The operator half of ``RedisBroker`` (it provides ``_conn``, ``_run``, ``_keys``)."""

    _conn: "Connection"
    _keys: "KeyCache"
    _registry: str
    _run: Callable[..., Awaitable[Any]]
    replayed_envelope: Callable[..., Envelope]
    matches_replay: Callable[..., bool]

    async def list_queues(self) -> list[str]:
        client = self._conn.client
        with self._conn.guard:
            names = sorted(text(n) for n in await client.smembers(self._registry))
            if not names:
                return []
            script = self._conn.script("live")
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    await script(keys=self._keys(name), args=[], client=pipe)
                flags = await pipe.execute()
        return [name for name, live in zip(names, flags) if live]

    async def _queue_stats(self, queues: list[str]) -> list[QueueStats]:
        client = self._conn.client
        with self._conn.guard:
            script = self._conn.script("stats")
            async with client.pipeline(transaction=False) as pipe:
                for name in queues:
                    await script(keys=self._keys(name), args=[], client=pipe)
                replies = await pipe.execute()
        out = []
        for name, (pending, delayed, inflight, dead, oldest, now, enq, done) in zip(queues, replies):
            age = None if oldest < 0 else max(0.0, (now - oldest) / 1e6)
            out.append(QueueStats(queue=name, pending=pending, delayed=delayed, inflight=inflight, dead=dead,
                                  oldest_pending_age=age, enqueued_total=enq, completed_total=done))
        return out

    async def _peek(self, queue: str, state: str, limit: int, offset: int) -> list[MessageInfo]:
        if limit == 0:
            return []
        rows = await self._run("peek", self._keys(queue), [state, limit, offset, PEEK_DUE_SCAN])
        out = []
        for k in range(0, len(rows), 4):
            raw, holder, until, count = rows[k:k + 4]
            envelope, _ = decode(raw, "?", queue)
            out.append(MessageInfo(envelope=envelope, state=state, lease_holder=text(holder) or None,
                                   lease_expires_at=from_us(until) if until >= 0 else None, delivery_count=int(count)))
        return out

    async def _requeue(self, queue: str, ids: set[str]) -> int:
        keys = self._keys(queue)
        reply = await self._run("requeue", keys, sorted(ids))
        changed = int(reply[0])
        moves: list[Any] = []
        now = utcnow()
        for k in range(1, len(reply), 2):
            envelope, ok = decode(reply[k + 1], "?", queue)
            if ok:
                # Ready from now: its age (and its place among equals) starts now.
                moves.extend([reply[k], envelope.replace(not_before=now).to_json(), to_us(now)])
        if moves:
            changed += int(await self._run("promote_now", keys, moves))
        return changed

    async def _remove(self, queue: str, ids: set[str]) -> int:
        keys = self._keys(queue)
        wanted = sorted(ids)
        removed = int(await self._run("remove", keys, wanted))
        # Undelivered copies are not indexed: walk each band, a bounded chunk at a time.
        for band in range(BANDS):
            cursor = ""
            while True:
                count, after = await self._run("remove_scan", keys, [band, cursor, REPAIR_BATCH, *wanted])
                removed += int(count)
                cursor = text(after)
                if not cursor:
                    break
        return removed

    async def _purge(self, queue: str) -> int:
        total = 0
        while True:
            n = int(await self._run("purge", self._keys(queue), [REPAIR_BATCH]))
            total += n
            if n < REPAIR_BATCH:
                return total

    # -- dead letters ---------------------------------------------------------------

    async def _list_dead_letters(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
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

    async def _get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        with self._conn.guard:
            raw = await self._conn.client.hget(self._keys(queue)[DEADBODY_INDEX], id)
        return decode_dead_letter(raw, queue) if raw is not None else None

    async def _replay_dead_letters(self, queue: str, *, limit: int, since: datetime | None, delay: float | None,
                                   dry_run: bool, ids: set[str] | None, task: str | None) -> ReplayResult:
        picked = await self._pick_dead(queue, limit, since, ids, task)
        if dry_run or not picked:
            return ReplayResult(entries=[entry for entry, _ in picked], dry_run=dry_run)
        now = utcnow()
        args: list[Any] = [len(picked)]
        for entry, raw in picked:
            env = self.replayed_envelope(entry.envelope, delay, now=now).replace(queue=queue)
            due = to_us(env.not_before) if env.not_before is not None else 0
            args.extend([env.id, raw, env.to_json(), ready_us(env), due, env.priority, lease_ms(env)])
        moved = {text(i) for i in await self._run("replay", self._keys(queue), args)}
        return ReplayResult(entries=[entry for entry, _ in picked if entry.envelope.id in moved], dry_run=False)

    async def _pick_dead(self, queue: str, limit: int, since: datetime | None, ids: set[str] | None,
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
                if self.matches_replay(entry, since, ids, task):
                    picked.append((entry, raw))
                    if len(picked) >= limit:
                        break
            if len(chunk) < REPLAY_READ_CHUNK:
                break
            offset += len(chunk)
        return picked

    async def _purge_dead_letters(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        low = str(to_us(since)) if since is not None else "-inf"
        total = 0
        while limit is None or total < limit:
            want = REPAIR_BATCH if limit is None else min(REPAIR_BATCH, limit - total)
            n = int(await self._run("dlq_purge", self._keys(queue), [low, want]))
            total += n
            if n < want:
                break
        return total


__all__ = ["InspectMixin"]
