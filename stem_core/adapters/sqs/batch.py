"""``SQSBatches``: every send, delete and visibility change goes out in SQS's batch form.

SQS bills per request and its batch calls take up to 10 entries, so calls made close
together share a request. Per queue URL and kind of call, one request is in flight; what
arrives meanwhile waits for it and goes in the next (a full batch of 10 does not wait:
up to ``PARALLEL_REQUESTS`` run at once). A lone call therefore goes out at once, and the
busier the queue the fuller the batches, with no timer adding latency. Sends also keep
each request under SQS's 1 MiB total.

Acks wait for their delete (an ack that returned is durable); a worker frees its
concurrency slot before it acks, so its acks overlap and share requests.

Per-entry outcomes: a send answers None or raises; a delete or visibility change answers
None (done) or the AWS error code of that entry (``ReceiptHandleIsInvalid``...), which
the callers turn into "stale receipt". A failure of the whole request reaches every
caller of that batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, TypeVar

from ...errors import BrokerUnavailable, StemError
from .codec import MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES, Outgoing
from .connection import SQSConnection

T = TypeVar("T")
PARALLEL_REQUESTS = 4


@dataclass
class _Lane(Generic[T]):
    pending: list[tuple[T, int, "asyncio.Future[Any]"]] = field(default_factory=list)
    running: int = 0
    scheduled: bool = False


class Batcher(Generic[T]):
    """Coalesces ``add(key, item)`` calls into ``send(key, items)`` requests (see module)."""

    def __init__(self, send: Callable[[str, list[T]], Awaitable[list[Any]]], *, max_bytes: int | None = None) -> None:
        self._send = send
        self._max_bytes = max_bytes
        self._lanes: dict[str, _Lane[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, key: str, item: T, size: int = 0) -> Any:
        lane = self._lanes.setdefault(key, _Lane())
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lane.pending.append((item, size, done))
        self._kick(key, lane)
        return await done

    def _kick(self, key: str, lane: _Lane[T]) -> None:
        if lane.scheduled or not lane.pending:
            return
        if lane.running == 0 or (len(lane.pending) >= MAX_BATCH_ENTRIES and lane.running < PARALLEL_REQUESTS):
            lane.scheduled = True
            # The end of this loop turn: calls made in the same turn join the batch.
            asyncio.get_running_loop().call_soon(self._start, key, lane)

    def _start(self, key: str, lane: _Lane[T]) -> None:
        lane.scheduled = False
        chunk: list[tuple[T, int, asyncio.Future[Any]]] = []
        total = 0
        while lane.pending and len(chunk) < MAX_BATCH_ENTRIES:
            size = lane.pending[0][1]
            if chunk and self._max_bytes is not None and total + size > self._max_bytes:
                break
            chunk.append(lane.pending.pop(0))
            total += size
        if not chunk:
            return
        lane.running += 1
        task = asyncio.ensure_future(self._run(key, lane, chunk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._kick(key, lane)

    async def _run(self, key: str, lane: _Lane[T], chunk: list[tuple[T, int, "asyncio.Future[Any]"]]) -> None:
        try:
            outcomes = await self._send(key, [item for item, _, _ in chunk])
        except BaseException as exc:
            for _, _, done in chunk:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            lane.running -= 1
            if not lane.pending and lane.running == 0:
                self._lanes.pop(key, None)
            else:
                self._kick(key, lane)
        for (_, _, done), outcome in zip(chunk, outcomes):
            if done.done():
                continue
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

    async def drain(self) -> None:
        """Wait until every call made so far has been sent (a broker's ``close``)."""
        while self._tasks or any(lane.pending for lane in self._lanes.values()):
            await asyncio.sleep(0)
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)


class SQSBatches:
    """The three batched calls every part uses."""

    def __init__(self, conn: SQSConnection) -> None:
        self._conn = conn
        self._sends: Batcher[Outgoing] = Batcher(self._send_batch, max_bytes=MAX_MESSAGE_BYTES)
        self._deletes: Batcher[str] = Batcher(self._delete_batch)
        self._visibility: Batcher[tuple[str, int]] = Batcher(self._visibility_batch)

    async def send(self, url: str, message: Outgoing) -> None:
        await self._sends.add(url, message, message.size)

    async def send_all(self, url: str, messages: list[Outgoing]) -> None:
        """Send ``messages`` to one queue; raises the first failure after all were tried."""
        results = await asyncio.gather(*(self.send(url, m) for m in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def delete(self, url: str, handle: str) -> str | None:
        """None when deleted, else the entry's error code (a stale receipt)."""
        return await self._deletes.add(url, handle)


    async def change_visibility(self, url: str, handle: str, seconds: int) -> str | None:
        """None when done, else the entry's error code (a stale receipt, a ceiling hit)."""
        return await self._visibility.add(url, (handle, seconds))

    async def drain(self) -> None:
        for batcher in (self._sends, self._deletes, self._visibility):
            await batcher.drain()

    async def _send_batch(self, url: str, messages: list[Outgoing]) -> list[Any]:
        reply = await self._conn.sqs("send_message_batch", QueueUrl=url,
                                     Entries=[m.entry(str(i)) for i, m in enumerate(messages)])
        failed = {f["Id"]: f for f in reply.get("Failed") or []}
        outcomes: list[Any] = []
        for i in range(len(messages)):
            entry = failed.get(str(i))
            if entry is None:
                outcomes.append(None)
                continue
            text = f"SQS refused a message ({entry.get('Code')}: {entry.get('Message')})"
            outcomes.append(StemError(text) if entry.get("SenderFault") else BrokerUnavailable(text))
        return outcomes

    async def _delete_batch(self, url: str, handles: list[str]) -> list[Any]:
        reply = await self._conn.sqs("delete_message_batch", QueueUrl=url,
                                     Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)])
        return _codes(len(handles), reply)

    async def _visibility_batch(self, url: str, changes: list[tuple[str, int]]) -> list[Any]:
        reply = await self._conn.sqs(
            "change_message_visibility_batch", QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": s} for i, (h, s) in enumerate(changes)],
        )
        return _codes(len(changes), reply)


def _codes(count: int, reply: dict[str, Any]) -> list[str | None]:
    failed = {f["Id"]: str(f.get("Code") or "Failed") for f in reply.get("Failed") or []}
    return [failed.get(str(i)) for i in range(count)]


__all__ = ["Batcher", "PARALLEL_REQUESTS", "SQSBatches"]
