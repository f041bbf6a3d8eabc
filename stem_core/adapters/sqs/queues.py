"""``SQSQueues``: which SQS queues exist for this namespace, their URLs, and creating them.

SQS addresses queues by URL, so every URL learnt (created, looked up, listed) is cached
for the life of the broker. The namespace listing (``ListQueues`` with the namespace
prefix, 1,000 names a page) is cached too, for as long as each caller allows: consumers
discover the priority bands other processes created every ``BAND_REFRESH_S``, the
inspector re-lists every ``LISTING_TTL_S``. Queues this broker creates join the cached
listing at once, so its own consumers see a new band immediately.

Queues are created on first use (publish, subscribe, dead letter) and never deleted by
Stem (SQS forbids re-creating a deleted name for 60 s, and an empty queue costs nothing).

SQS drops a message once it is older than its queue's ``MessageRetentionPeriod``: work
queues keep the maximum (14 days); dead queues keep the dead-letter retention
(``STEM_DEAD_LETTER_RETENTION``, brought into SQS's 60 s..14 days), set when Stem first
uses one in a process, so a changed setting reaches dead queues made before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ...clock import monotonic
from .connection import QueueMissing, SQSCallError, SQSConnection
from .names import DEAD_KIND, TAG_QUEUE, Parsed, SQSNames

# A new priority band made by another process is found within this long.
BAND_REFRESH_S = 180.0
# Operator reads (stats, list_queues) trust a listing this old.
LISTING_TTL_S = 5.0
LIST_PAGE_SIZE = 1000
# Messages older than this are dropped by SQS itself; 14 days is its maximum.
RETENTION_S = 1_209_600
# The least MessageRetentionPeriod SQS accepts.
MIN_RETENTION_S = 60
# Hashed-name tag lookups made at once while listing.
TAG_LOOKUPS_IN_PARALLEL = 8


@dataclass
class Listing:
    """One namespace listing: Stem queue -> SQS kind (``p0``..``p9``, ``dead``) -> URL."""

    at: float
    queues: dict[str, dict[str, str]] = field(default_factory=dict)
    subscribers: dict[str, str] = field(default_factory=dict)

    def add(self, queue: str, kind: str, url: str) -> None:
        self.queues.setdefault(queue, {})[kind] = url


def dead_retention_period(seconds: float) -> int:
    """The dead-letter retention as an SQS ``MessageRetentionPeriod`` (60 s..14 days)."""
    return max(MIN_RETENTION_S, min(RETENTION_S, int(seconds)))


def name_of(url: str) -> str:
    return url.rstrip("/").rpartition("/")[2]


class SQSQueues:
    """URL cache, creation and listing of one namespace's SQS queues."""

    def __init__(self, conn: SQSConnection, names: SQSNames, *, dead_letter_retention: float = RETENTION_S) -> None:
        self._conn = conn
        self.names = names
        self.dead_retention_s = dead_retention_period(dead_letter_retention)
        self._urls: dict[str, str] = {}
        self._hashed: dict[str, str] = {}
        self._listing: Listing | None = None
        self._listing_lock = asyncio.Lock()
        # Bumped whenever a queue URL becomes known, so subscriptions can notice cheaply.
        self.version = 0

    async def ensure(self, queue: str, kind: str) -> str:
        """The URL of ``queue``'s ``kind`` queue, created on first use."""
        name = self.names.queue(queue, kind)
        url = self._urls.get(name)
        if url is None:
            url = await self._create(name, queue, kind)
            self._learn(name, url, queue, kind)
        return url

    async def find(self, queue: str, kind: str) -> str | None:
        """The URL of ``queue``'s ``kind`` queue; None when it does not exist."""
        name = self.names.queue(queue, kind)
        url = self._urls.get(name)
        if url is None:
            try:
                url = str((await self._conn.sqs("get_queue_url", QueueName=name))["QueueUrl"])
            except QueueMissing:
                return None
            self._learn(name, url, queue, kind)
        return url

    async def _create(self, name: str, queue: str, kind: str) -> str:
        attributes = {"MessageRetentionPeriod": str(self.dead_retention_s if kind == DEAD_KIND else RETENTION_S)}
        params: dict[str, object] = {"QueueName": name, "Attributes": attributes}
        if self.names.is_hashed(queue):
            params["tags"] = {TAG_QUEUE: queue}
        try:
            return str((await self._conn.sqs("create_queue", **params))["QueueUrl"])
        except SQSCallError as exc:
            if exc.code not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
        # Made by hand (or an older Stem) with other attributes: use it as it is, but a
        # dead queue takes this process's dead-letter retention.
        url = str((await self._conn.sqs("get_queue_url", QueueName=name))["QueueUrl"])
        if kind == DEAD_KIND:
            await self._conn.sqs("set_queue_attributes", QueueUrl=url, Attributes=attributes)
        return url

    def _learn(self, name: str, url: str, queue: str, kind: str) -> None:
        self._urls[name] = url
        self.version += 1
        if self._listing is not None:
            self._listing.add(queue, kind, url)

    def forget(self, url: str) -> None:
        """``url`` was deleted behind our back: look it up (or create it) again next time."""
        name = name_of(url)
        self._urls.pop(name, None)
        if self._listing is not None:
            for kinds in self._listing.queues.values():
                for kind, known in list(kinds.items()):
                    if known == url:
                        del kinds[kind]
            self._listing.subscribers.pop(name, None)

    async def listing(self, max_age: float) -> Listing:
        """Every SQS queue of the namespace, no older than ``max_age`` seconds."""
        current = self._listing
        if current is not None and monotonic() - current.at <= max_age:
            return current
        async with self._listing_lock:
            current = self._listing
            if current is not None and monotonic() - current.at <= max_age:
                return current
            fresh = await self._list()
            self._listing = fresh
            self.version += 1
            return fresh

    async def _list(self) -> Listing:
        started = monotonic()
        urls: list[str] = []
        params: dict[str, object] = {"QueueNamePrefix": self.names.base, "MaxResults": LIST_PAGE_SIZE}
        while True:
            page = await self._conn.sqs("list_queues", **params)
            urls.extend(page.get("QueueUrls") or [])
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        listing = Listing(at=started)
        unresolved: list[tuple[str, Parsed]] = []
        for url in urls:
            name = name_of(url)
            parsed = self.names.parse(name)
            if parsed is None:
                continue
            self._urls[name] = url
            if parsed.kind == "subscriber":
                listing.subscribers[name] = url
            elif parsed.queue is not None:
                listing.add(parsed.queue, parsed.kind, url)
            elif parsed.part in self._hashed:
                listing.add(self._hashed[parsed.part], parsed.kind, url)
            else:
                unresolved.append((url, parsed))
        await self._resolve(unresolved, listing)
        return listing

    async def _resolve(self, unresolved: list[tuple[str, Parsed]], listing: Listing) -> None:
        """Hashed names carry their Stem name in a tag (rare: names longer than SQS allows)."""
        gate = asyncio.Semaphore(TAG_LOOKUPS_IN_PARALLEL)

        async def one(url: str, parsed: Parsed) -> None:
            async with gate:
                try:
                    tags = (await self._conn.sqs("list_queue_tags", QueueUrl=url)).get("Tags") or {}
                except QueueMissing:
                    return
            queue = tags.get(TAG_QUEUE)
            if queue and self.names.part(queue) == parsed.part:
                self._hashed[parsed.part] = queue
                listing.add(queue, parsed.kind, url)

        await asyncio.gather(*(one(url, parsed) for url, parsed in unresolved))


__all__ = ["BAND_REFRESH_S", "LISTING_TTL_S", "Listing", "SQSQueues", "dead_retention_period", "name_of"]
