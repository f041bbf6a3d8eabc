"""What every test package shares: waiting for something that happens eventually.

A test waits for a condition, never for a fixed time: ``await eventually(check)`` calls
``check`` until it holds. The deadline only bounds a hang (a broken test fails with a
message instead of running into the per-test timeout); no test asserts on how fast
something happened.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from typing import Any, Awaitable, Callable, TypeVar

# Generous: a loaded machine is slow, and only a hang should ever reach the deadline.
DEADLINE_S = 60.0
POLL_INTERVAL_S = 0.02

T = TypeVar("T")
_TRUTHY: Any = object()


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    *,
    equals: Any = _TRUTHY,
    timeout: float = DEADLINE_S,
    interval: float = POLL_INTERVAL_S,
    message: str | None = None,
) -> T:
    """Call ``check`` (sync or async) every ``interval`` seconds until it returns something
    truthy, or a value ``== equals`` when that is given, and return that value.

    After ``timeout`` seconds it fails with an ``AssertionError`` naming what it waited for
    (``message``, else the source of ``check``) and the last value ``check`` returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if (value == equals) if equals is not _TRUTHY else value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            what = message or _describe(check)
            wanted = "" if equals is _TRUTHY else f" == {equals!r}"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{wanted}; last value: {value!r}")
        await asyncio.sleep(interval)


def _describe(check: Callable[..., Any]) -> str:
    """The source line of a lambda (what a reader sees in the test), else the function's name."""
    name = getattr(check, "__qualname__", repr(check))
    if getattr(check, "__name__", None) != "<lambda>":
        return name
    try:
        return inspect.getsource(check).strip()
    except (OSError, TypeError):
        return name


__all__ = ["DEADLINE_S", "POLL_INTERVAL_S", "eventually"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
