"""Waking an idle consumer or watcher from any thread or event loop."""

from __future__ import annotations

import asyncio
from typing import Callable


def make_waker(fut: "asyncio.Future[None]") -> Callable[[], None]:
    """A callable that resolves ``fut`` (once) from any thread or event loop.

    Stores are process-global, so the publisher may run on another loop than the waiting
    consumer; a future may only be resolved from its own loop, hence the hop.
    """
    loop = fut.get_loop()

    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    def wake() -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            resolve()
            return
        try:
            loop.call_soon_threadsafe(resolve)
        except RuntimeError:
            pass  # that loop is closed: nobody is waiting any more

    return wake


__all__ = ["make_waker"]
