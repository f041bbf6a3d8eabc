"""The one bridge from the event loop to a database connection: a dedicated thread.

Every call to a connection is one hop: ``submit`` queues ``fn(*args)`` and returns a
future of the caller's loop; the thread runs it and hands the outcome back with
``call_soon_threadsafe``. Half the cost of a ``ThreadPoolExecutor`` hop (measured: 43 vs
89 us), which matters at one hop per transaction. The thread is a daemon, so a database
nobody closed cannot hold the interpreter open (an interrupted transaction is simply
rolled back by SQLite).

Calls submitted as ``grouped`` that are waiting together are handed to ``group`` as one
list (the group commit of ``db.py``); their outcomes go back to each loop in one wake-up
(one ``call_soon_threadsafe``, i.e. one write to the loop's self-pipe, not one per call).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

# At most this many queued calls share one group commit (bounds how long it holds the lock).
GROUP_MAX_CALLS = 64

# (loop, future, fn, args, grouped, owner): owner is whatever ``group`` needs per call.
Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], bool, Any]
Outcome = tuple[bool, Any]
GroupFn = Callable[[list[tuple[Callable[..., Any], tuple[Any, ...], Any]]], list[Outcome]]


class DatabaseThread:
    """One daemon thread running submitted calls in order (see the module docstring)."""

    def __init__(self, name: str, group: GroupFn) -> None:
        self._group = group
        self._jobs: "queue.SimpleQueue[Job | None]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any, grouped: bool = False,
               owner: Any = None) -> "asyncio.Future[T]":
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, fut, fn, args, grouped, owner))
        return fut

    def stop(self) -> None:
        """Finish what was submitted, then exit."""
        self._jobs.put(None)

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < GROUP_MAX_CALLS:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            done: list[tuple[Job, Outcome]] = []
            try:
                for jobs, outcomes in self._run(batch):
                    done.extend(zip(jobs, outcomes))
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                done = [(job, (False, exc)) for job in batch]
            _deliver(done)

    def _run(self, batch: list[Job]) -> Iterator[tuple[list[Job], list[Outcome]]]:
        """Runs of consecutive grouped calls go to ``group``; other calls run alone."""
        run: list[Job] = []
        for job in [*batch, None]:
            if job is not None and job[4]:
                run.append(job)
                continue
            if run:
                yield run, self._group([(fn, args, owner) for _, _, fn, args, _, owner in run])
                run = []
            if job is not None:
                yield [job], [_outcome(job[2], job[3])]


def _deliver(done: list[tuple[Job, Outcome]]) -> None:
    """Hand the outcomes back: one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple["asyncio.Future[Any]", Outcome]]] = {}
    for job, outcome in done:
        by_loop.setdefault(job[0], []).append((job[1], outcome))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, settled)
        except RuntimeError:
            pass  # that loop is closed: nobody is waiting any more


def _settle_all(settled: list[tuple["asyncio.Future[Any]", Outcome]]) -> None:
    for fut, (ok, value) in settled:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    try:
        return True, fn(*args)
    except BaseException as exc:  # handed to the awaiting coroutine
        return False, exc


__all__ = ["DatabaseThread", "GROUP_MAX_CALLS"]
