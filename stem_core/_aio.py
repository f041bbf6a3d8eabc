"""Small asyncio helpers shared by the adapters."""

from __future__ import annotations

import asyncio
from typing import Callable


def resolve(fut: "asyncio.Future[None]") -> None:
    """Set ``fut``'s result unless it is already done (a timer and a waker may race)."""
    if not fut.done():
        fut.set_result(None)


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


__all__ = ["make_waker", "resolve"]
