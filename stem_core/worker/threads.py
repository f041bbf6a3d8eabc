"""The one bridge between the worker's event loop and threads.

Sync task bodies run in daemon threads (``ThreadBridge.run``); code in those threads
reaches back into the loop with ``ThreadBridge.call`` (lease extension, progress). The
threads are daemons on purpose: a sync task that overran its time limit, or that was
terminated, cannot be killed, and must not keep the process alive after the worker has
handed its work back and exited.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
from typing import Any, Callable, Coroutine

log = logging.getLogger("stem.worker")

# Extra threads beyond the concurrency, for sync tasks abandoned after a time limit or a
# terminate: they keep their thread until they return, and new tasks must still start.
ABANDONED_THREAD_HEADROOM = 16
# How long a task thread waits for the loop to answer a ctx call (lease extension, progress).
LOOP_CALL_TIMEOUT_S = 30.0

_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class ThreadBridge:
    """A grow-on-demand pool of daemon threads bound to one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_threads: int, name: str = "stem-task") -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be >= 1")
        self._loop = loop
        self._max_threads = max_threads
        self._name = name
        self._jobs: "queue.SimpleQueue[_Job | None]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._busy = 0
        self._waiting = 0
        self._closed = False
        # Built on the loop's thread (by the running worker), so this is the loop thread.
        self._loop_thread = threading.get_ident()

    @property
    def busy(self) -> int:
        """Threads currently running a job (abandoned ones included)."""
        return self._busy

    def in_loop_thread(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def run(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """Start ``func(*args, **kwargs)`` in a pool thread; the future resolves on the loop.

        Cancelling the future abandons the call (the thread finishes it on its own).
        """
        if self._closed:
            raise RuntimeError("thread bridge is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            # Every queued job needs an idle thread of its own, or a new one.
            self._waiting += 1
            if self._waiting > self._idle and len(self._threads) < self._max_threads:
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads) + 1}", daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
        # The caller's context goes along (the log fields a worker binds for the task).
        context = contextvars.copy_context()
        self._jobs.put((context.run, (func, *args), kwargs, future))
        return future

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = LOOP_CALL_TIMEOUT_S) -> Any:
        """From a pool thread: run ``coro`` on the loop and return its result."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("ThreadBridge.call is for task threads; on the loop, await the coroutine")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        """Let idle threads exit; busy (abandoned) ones end when their call returns."""
        self._closed = True
        with self._lock:
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)

    # -- thread side ----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            func, args, kwargs, future = job
            with self._lock:
                self._waiting -= 1
                self._idle -= 1
                self._busy += 1
            try:
                result, error = func(*args, **kwargs), None
            except BaseException as exc:  # noqa: BLE001 - handed to the loop as the task's outcome
                result, error = None, exc
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle += 1
            self._resolve(future, result, error)

    def _resolve(self, future: "asyncio.Future[Any]", result: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if future.done():  # abandoned (time limit, terminate, shutdown)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:
            # The loop is gone (the worker exited while this abandoned call still ran).
            log.debug("task thread finished after the worker's loop closed")


__all__ = ["ABANDONED_THREAD_HEADROOM", "LOOP_CALL_TIMEOUT_S", "ThreadBridge"]
