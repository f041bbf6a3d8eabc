"""Small asyncio helpers shared by the adapters and the worker."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")

# For TurnBatch senders: the outcome slot of an item not yet stored (filled with the
# error when a later statement or call fails).
UNSENT: Any = object()


def resolve(fut: "asyncio.Future[None]") -> None:
    """Set ``fut``'s result unless it is already done (a timer and a waker may race)."""
    if not fut.done():
        fut.set_result(None)


def retrieve(fut: "asyncio.Future[Any]") -> None:
    """A done callback for a future nobody awaits any more (an abandoned task body, a
    close that stopped waiting): read its outcome, so asyncio does not log it as lost."""
    if not fut.cancelled():
        fut.exception()


def make_waker(fut: "asyncio.Future[None]") -> Callable[[], None]:
    """A callable that resolves ``fut`` (once) from any thread or event loop.

    Adapter stores and doorbells are process-wide, so the publisher may run on another
    loop than the waiting consumer; a future may only be resolved from its own loop,
    hence the hop.
    """
    loop = fut.get_loop()

    def wake() -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            resolve(fut)
            return
        try:
            loop.call_soon_threadsafe(resolve, fut)
        except RuntimeError:
            pass  # that loop is closed: nobody is waiting any more

    return wake


class TurnBatch(Generic[T]):
    """Calls made during one event-loop turn, sent together (one round trip for all).

    ``await batch.add(item)``: the first item of a turn schedules ``send(items)`` for the
    end of the turn (``call_soon``), so a lone call goes out alone and no later; items
    added meanwhile join it (a worker's claimed tasks start, and often finish, in one
    turn). ``send`` returns one outcome per item, in order: a value, or an exception
    instance for that caller alone; when ``send`` raises, every caller of the batch gets
    the exception. ``drain`` waits for the batches in flight (an adapter's ``close``).
    """

    def __init__(self, send: Callable[[list[T]], Awaitable[Sequence[Any]]]) -> None:
        self._send = send
        self._items: list[T] = []
        self._waiters: list["asyncio.Future[Any]"] = []
        self._flying: set["asyncio.Task[None]"] = set()

    async def add(self, item: T) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._items.append(item)
        self._waiters.append(done)
        if len(self._items) == 1:
            loop.call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        items, waiters = self._items, self._waiters
        self._items, self._waiters = [], []
        task = asyncio.ensure_future(self._run(items, waiters))
        self._flying.add(task)
        task.add_done_callback(self._flying.discard)

    async def _run(self, items: list[T], waiters: list["asyncio.Future[Any]"]) -> None:
        try:
            outcomes = await self._send(items)
            if len(outcomes) != len(waiters):
                raise RuntimeError(f"a batch of {len(waiters)} got {len(outcomes)} outcomes")
        except BaseException as exc:
            for done in waiters:
                if not done.done():
                    done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for done, outcome in zip(waiters, outcomes):
            if done.done():
                continue
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

    async def drain(self) -> None:
        """Let this turn's batch start, then wait for every batch in flight."""
        await asyncio.sleep(0)
        if self._flying:
            await asyncio.gather(*self._flying, return_exceptions=True)


__all__ = ["TurnBatch", "UNSENT", "make_waker", "resolve", "retrieve"]
