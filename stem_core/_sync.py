"""The engine of the synchronous producer API: one event-loop thread per app.

``SyncRunner.call(fn)`` runs ``fn(app)`` (a coroutine) on the runner's own loop, in a
daemon thread started on first use, and blocks the calling thread on the result. The
loop owns its own ``Stem`` (``make_app()``: the app's URLs, namespace and registry), so
its driver connections are opened, used and closed on that one loop, whichever thread
calls. ``close()`` (also ``aclose()``, and an ``atexit`` hook for every runner still
open) closes those connections and stops the thread; a later call starts a new one.
After ``os.fork()`` the child forgets the parent's loop thread (never closing its
sockets there) and starts its own on its first call. docs/sync.md has the design.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import CallTimeout, StemError

if TYPE_CHECKING:
    from .app import Stem

T = TypeVar("T")
log = logging.getLogger("stem.sync")

# How long enqueue_sync / enqueue_many_sync wait for their loop thread by default.
DEFAULT_CALL_TIMEOUT_S = 60.0
# How long close_sync (and the exit hook) waits for the connections to close and the
# thread to end.
CLOSE_TIMEOUT_S = 10.0

ON_LOOP_MESSAGE = (
    "a synchronous Stem call ({what}) was made on the app's own sync event-loop thread, where "
    "waiting for it would wait for itself: use the async API there (await app.enqueue(...))"
)


@dataclass
class _LoopThread:
    """One started loop: its thread, the app whose connections it owns, and a future the
    thread resolves when it has closed the loop and is about to end."""

    loop: asyncio.AbstractEventLoop
    app: "Stem"
    thread: threading.Thread = field(init=False)
    finished: "concurrent.futures.Future[None]" = field(default_factory=concurrent.futures.Future)
    # The calls submitted and not yet answered: cancelled if the loop ends under them.
    pending: "set[concurrent.futures.Future[Any]]" = field(default_factory=set)


class SyncRunner:
    """Runs coroutines for synchronous callers on one background event loop."""

    def __init__(self, make_app: Callable[[], "Stem"], thread_name: Callable[[], str]) -> None:
        self._make_app = make_app
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._current: _LoopThread | None = None
        self.starts = 0  # how many loop threads (and connection sets) this runner started

    # -- state ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._current is not None

    @property
    def app(self) -> "Stem | None":
        """The app that owns the loop thread's connections (None when not started)."""
        current = self._current
        return current.app if current is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        current = self._current
        return current.loop if current is not None else None

    @property
    def thread(self) -> threading.Thread | None:
        current = self._current
        return current.thread if current is not None else None

    def on_loop_thread(self) -> bool:
        current = self._current
        return current is not None and current.thread.ident == threading.get_ident()

    # -- calls ----------------------------------------------------------------------

    def call(self, fn: Callable[["Stem"], Coroutine[Any, Any, T]], *, timeout: float | None, what: str) -> T:
        """``fn(app)`` run on the loop thread; its result, or its exception re-raised.

        ``timeout`` seconds without an answer: the coroutine is cancelled and
        ``CallTimeout`` raised. An interrupt (Ctrl-C) while waiting cancels it too.
        """
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"call_timeout must be seconds >= 0 or None, got {timeout!r}")
        if self.on_loop_thread():
            raise StemError(ON_LOOP_MESSAGE.format(what=what))
        current = self._ensure()
        try:
            future = asyncio.run_coroutine_threadsafe(fn(current.app), current.loop)
        except RuntimeError:  # the loop was closed between _ensure and here (a concurrent close)
            raise StemError(f"{what}: the app's sync event-loop thread was closed during the call") from None
        current.pending.add(future)
        future.add_done_callback(current.pending.discard)
        try:
            done, _ = concurrent.futures.wait([future], timeout)
        except BaseException:  # KeyboardInterrupt while blocked: do not leave the call running
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise CallTimeout(f"{what} got no answer within {timeout:g} s (call_timeout)")
        if future.cancelled():
            raise StemError(f"{what}: the app's sync event-loop thread was closed during the call")
        return future.result()

    def _ensure(self) -> _LoopThread:
        current = self._current
        if current is not None:
            return current
        with self._lock:
            if self._current is None:
                app = self._make_app()  # raises in the caller (ConfigurationError) before a thread starts
                loop = asyncio.new_event_loop()
                started = _LoopThread(loop=loop, app=app)
                started.thread = threading.Thread(target=_run_loop, args=(started,), name=self._thread_name(), daemon=True)
                started.thread.start()
                self._current = started
                self.starts += 1
                _LIVE.add(self)
            return self._current

    # -- closing --------------------------------------------------------------------

    def _detach(self) -> _LoopThread | None:
        with self._lock:
            current, self._current = self._current, None
            _LIVE.discard(self)
        return current

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Close the loop thread's connections and stop it (no-op when not started).

        Calls still running on it are cancelled (their callers get ``StemError``).
        """
        if self.on_loop_thread():
            raise StemError(ON_LOOP_MESSAGE.format(what="close_sync()"))
        current = self._detach()
        if current is None:
            return
        try:
            closing = asyncio.run_coroutine_threadsafe(_shutdown(current.app), current.loop)
        except RuntimeError:
            return  # already closed
        try:
            concurrent.futures.wait([closing], timeout)
        finally:
            _stop(current)
            concurrent.futures.wait([current.finished], timeout)
            current.thread.join(timeout)
        if closing.done() and not closing.cancelled() and closing.exception() is not None:
            raise closing.exception()  # type: ignore[misc]

    async def aclose(self) -> None:
        """``close()`` for async callers: awaits the loop thread instead of blocking on it."""
        if self.on_loop_thread():
            raise StemError(ON_LOOP_MESSAGE.format(what="close()"))
        current = self._detach()
        if current is None:
            return
        try:
            closing = asyncio.run_coroutine_threadsafe(_shutdown(current.app), current.loop)
        except RuntimeError:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(closing), CLOSE_TIMEOUT_S)
        finally:
            _stop(current)
            await asyncio.wait_for(asyncio.wrap_future(current.finished), CLOSE_TIMEOUT_S)
            current.thread.join(CLOSE_TIMEOUT_S)  # it has closed its loop: only its return is left

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's loop thread without touching it (its
        thread does not exist here; its sockets are the parent's sessions)."""
        self._lock = threading.Lock()
        if self._current is not None:
            _ORPHANS.append(self._current)  # never collected: no "unclosed" warnings from the copies
            self._current = None


def _run_loop(started: _LoopThread) -> None:
    loop = started.loop
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except BaseException:  # pragma: no cover - a loop failure; logged, the thread ends
        log.exception("the sync event-loop thread %s failed", started.thread.name)
    finally:
        # A call submitted while the loop was stopping will never run: answer its caller now.
        for future in list(started.pending):
            future.cancel()
        asyncio.set_event_loop(None)
        loop.close()
        started.finished.set_result(None)


def _stop(current: _LoopThread) -> None:
    try:
        current.loop.call_soon_threadsafe(current.loop.stop)
    except RuntimeError:
        pass  # the loop is already closed


async def _shutdown(app: "Stem") -> None:
    """On the loop: close the app's connections, then cancel whatever still runs there."""
    try:
        await app.close()
    finally:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        for task in others:
            task.cancel()
        if others:
            await asyncio.gather(*others, return_exceptions=True)


# Guards the lazy creation of an app's SyncRunner (the first sync calls may race);
# replaced in a forked child, where another thread of the parent may have held it.
RUNNER_LOCK = threading.Lock()
# Runners with a started loop thread (closed at exit); strong references, so an app that
# is dropped without closing still has its connections closed by the exit hook.
_LIVE: set[SyncRunner] = set()
# Loop threads a forked child inherited from its parent: kept, never used or closed.
_ORPHANS: list[_LoopThread] = []


def close_all(timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Close every started runner (the ``atexit`` hook)."""
    for runner in list(_LIVE):
        try:
            runner.close(timeout)
        except Exception:  # at exit: report and go on with the others
            log.warning("closing a Stem sync event-loop thread at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    global RUNNER_LOCK
    RUNNER_LOCK = threading.Lock()
    for runner in list(_LIVE):
        runner.forget_after_fork()
    _LIVE.clear()


atexit.register(close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["CLOSE_TIMEOUT_S", "DEFAULT_CALL_TIMEOUT_S", "SyncRunner", "close_all"]
