"""``SQSDeadLetters``: list, get, replay and purge the dead queue of a Stem queue.

Each Stem queue has a dead queue (``B<queue>-dead``, created on the first dead letter);
an entry is the envelope with its reason, meta and time in message attributes. SQS
cannot read a queue without receiving it, so every operation *scans*: it receives the
whole dead queue with a visibility of ``SCAN_HOLD_S`` (10 messages a request), does its
work (replay sends and deletes, purge deletes), and makes the rest visible again at
once. That is portable (no ``StartMessageMoveTask``, which moto lacks) and exact for
the queue sizes dead letters are meant to have; its cost grows with the dead queue, so
keep it short (replay or purge what you have looked at). Two scans at the same moment
each see only part of the queue; a scan that dies leaves the rest hidden for
``SCAN_HOLD_S`` at most.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from ...clock import parse_iso, utcnow
from ...contract.broker import Broker
from ...contract.types import DeadLetterEntry, DeadLetterPage, ReplayResult
from ...envelope import Envelope
from .batch import SQSBatches
from .codec import ATTR_DEAD_AT, ATTR_META, ATTR_REASON, Received
from .connection import QueueMissing, SQSConnection
from .names import DEAD_KIND
from .publish import SQSPublisher
from .queues import SQSQueues

SCAN_HOLD_S = 30
# When a short poll comes back empty before the approximate count was reached, one long
# poll (which asks every SQS server, not a sample) confirms the queue is drained.
CONFIRM_WAIT_S = 1


@dataclass
class Dead:
    """One dead letter as scanned: the newest entry of its envelope id, every handle."""

    entry: DeadLetterEntry
    handles: list[str] = field(default_factory=list)


@dataclass
class Scan:
    url: str | None
    dead: list[Dead] = field(default_factory=list)
    others: list[str] = field(default_factory=list)

    @property
    def handles(self) -> list[str]:
        return [h for d in self.dead for h in d.handles] + self.others


class SQSDeadLetters:
    """Dead letters by receive, send and delete."""

    def __init__(self, conn: SQSConnection, queues: SQSQueues, batches: SQSBatches, publisher: SQSPublisher) -> None:
        self._conn = conn
        self._queues = queues
        self._batches = batches
        self._publisher = publisher

    async def list(self, queue: str, limit: int, offset: int) -> DeadLetterPage:
        scan = await self._scan(queue)
        await self._release(scan, scan.handles)
        newest = sorted((d.entry for d in scan.dead), key=lambda e: e.dead_at, reverse=True)
        page = newest[offset:offset + limit]
        end = offset + len(page)
        return DeadLetterPage(entries=page, next_offset=end if end < len(newest) and limit > 0 else None)

    async def get(self, queue: str, id: str) -> DeadLetterEntry | None:
        scan = await self._scan(queue)
        await self._release(scan, scan.handles)
        return next((d.entry for d in scan.dead if d.entry.envelope.id == id), None)

    async def replay(self, queue: str, *, limit: int, since: datetime | None, delay: float | None, dry_run: bool,
                     ids: set[str] | None, task: str | None) -> ReplayResult:
        if limit == 0:
            return ReplayResult(entries=[], dry_run=dry_run)
        return await self._pick(
            queue, lambda e: Broker.matches_replay(e, since, ids, task), limit,
            None if dry_run else lambda picked: self._send_back(queue, picked, delay), dry_run,
        )

    async def purge(self, queue: str, *, since: datetime | None, limit: int | None) -> int:
        result = await self._pick(queue, lambda e: since is None or e.dead_at >= since, limit, None, False)
        return result.count

    async def _pick(self, queue: str, match: Callable[[DeadLetterEntry], bool], limit: int | None,
                    send: Callable[[list[Dead]], Any] | None, dry_run: bool) -> ReplayResult:
        """Oldest first, up to ``limit`` matching: ``send`` them (replay) unless a dry run,
        then delete them; every other message is made visible again."""
        scan = await self._scan(queue)
        oldest = sorted(scan.dead, key=lambda d: d.entry.dead_at)
        picked = [d for d in oldest if match(d.entry)]
        if limit is not None:
            picked = picked[:limit]
        chosen = {id(d) for d in picked} if not dry_run else set()
        try:
            if send is not None and picked and not dry_run:
                await send(picked)
            if chosen and scan.url is not None:
                await asyncio.gather(*(self._batches.delete(scan.url, h) for d in picked for h in d.handles))
        finally:
            await self._release(scan, [h for d in scan.dead if id(d) not in chosen for h in d.handles] + scan.others)
        return ReplayResult(entries=[d.entry for d in picked], dry_run=dry_run)

    async def _send_back(self, queue: str, picked: list[Dead], delay: float | None) -> None:
        now = utcnow()
        await self._publisher.publish([Broker.replayed_envelope(d.entry.envelope, delay, now=now, queue=queue)
                                       for d in picked])

    # -- scanning -------------------------------------------------------------------

    async def _scan(self, queue: str) -> Scan:
        url = await self._queues.find(queue, DEAD_KIND)
        scan = Scan(url)
        if url is None:
            return scan
        try:
            attrs = await self._conn.sqs("get_queue_attributes", QueueUrl=url,
                                         AttributeNames=["ApproximateNumberOfMessages"])
            expected = int(attrs.get("Attributes", {}).get("ApproximateNumberOfMessages") or 0)
            by_id: dict[str, Dead] = {}
            seen = 0
            confirmed = False
            while True:
                wait = CONFIRM_WAIT_S if confirmed else 0
                reply = await self._conn.sqs("receive_message", wait=wait, QueueUrl=url, MaxNumberOfMessages=10,
                                             VisibilityTimeout=SCAN_HOLD_S, WaitTimeSeconds=wait,
                                             MessageAttributeNames=["All"])
                messages = [Received.from_message(m) for m in reply.get("Messages") or []]
                if not messages:
                    if confirmed or seen >= expected:
                        break
                    confirmed = True
                    continue
                seen += len(messages)
                confirmed = False
                for message in messages:
                    self._add(scan, by_id, message)
        except QueueMissing:
            self._queues.forget(url)
            return Scan(None)
        scan.dead = list(by_id.values())
        return scan

    @staticmethod
    def _add(scan: Scan, by_id: dict[str, Dead], message: Received) -> None:
        entry = _entry(message)
        if entry is None:
            scan.others.append(message.handle)
            return
        known = by_id.get(entry.envelope.id)
        if known is None:
            by_id[entry.envelope.id] = Dead(entry, [message.handle])
            return
        known.handles.append(message.handle)  # the same id dead twice: keep the newest entry
        if entry.dead_at > known.entry.dead_at:
            known.entry = entry

    async def _release(self, scan: Scan, handles: list[str]) -> None:
        if scan.url is not None and handles:
            url = scan.url
            await asyncio.gather(*(self._batches.change_visibility(url, h, 0) for h in handles),
                                 return_exceptions=True)


def _entry(message: Received) -> DeadLetterEntry | None:
    env: Envelope | None = message.envelope
    if env is None:
        return None
    attrs = message.attributes
    try:
        meta = json.loads(attrs.get(ATTR_META) or "{}")
    except ValueError:
        meta = {}
    try:
        dead_at = parse_iso(attrs[ATTR_DEAD_AT])
    except (KeyError, ValueError):
        dead_at = env.enqueued_at
    return DeadLetterEntry(envelope=env, reason=attrs.get(ATTR_REASON) or "unknown", meta=meta if isinstance(meta, dict)
                           else {"meta": meta}, dead_at=dead_at)


__all__ = ["SCAN_HOLD_S", "SQSDeadLetters"]
