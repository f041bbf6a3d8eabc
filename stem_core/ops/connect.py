"""Connected adapters from a ``Settings``: the one place a front end's "connect to the
configured broker and backend" lives (``Ops.open``, the TUI's source, ``stem health``).

A server that never answers (a black-holed host) would hang a connect for the kernel's
TCP timeout; ``timeout`` bounds it and names the server instead. Callers that bound the
connect themselves (a probe timing it, a poll under its own deadline) pass ``None``.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from ..adapters import connect_backend, connect_broker
from ..contract import Broker, ResultBackend
from ..errors import BackendUnavailable, BrokerUnavailable
from ..settings import Settings, redact_url

T = TypeVar("T")

# Connecting to a server that does not answer gives up after this.
CONNECT_TIMEOUT_S = 10.0


async def _bounded(connecting: Awaitable[T], timeout: float | None, label: str, url: str,
                   error: type[BrokerUnavailable]) -> T:
    if timeout is None:
        return await connecting
    try:
        async with asyncio.timeout(timeout):
            return await connecting
    except TimeoutError:
        raise error(f"cannot reach the {label} at {redact_url(url)}: no answer within {timeout:.0f} s") from None


async def open_broker(settings: Settings, *, timeout: float | None = CONNECT_TIMEOUT_S) -> Broker:
    """The connected broker of ``settings`` (``BrokerUnavailable`` after ``timeout``)."""
    return await _bounded(connect_broker(settings.broker_url, namespace=settings.namespace), timeout, "broker",
                          settings.broker_url, BrokerUnavailable)


async def open_backend(settings: Settings, *, timeout: float | None = CONNECT_TIMEOUT_S) -> ResultBackend:
    """The connected result backend of ``settings`` (``BackendUnavailable`` after ``timeout``)."""
    return await _bounded(connect_backend(settings.backend_url, namespace=settings.namespace), timeout,
                          "result backend", settings.backend_url, BackendUnavailable)


async def open_adapters(settings: Settings, *, timeout: float | None = CONNECT_TIMEOUT_S) -> tuple[Broker, ResultBackend]:
    """The broker, then the backend; the broker is closed again when the backend fails."""
    broker = await open_broker(settings, timeout=timeout)
    try:
        backend = await open_backend(settings, timeout=timeout)
    except BaseException:
        await broker.close()
        raise
    return broker, backend


__all__ = ["CONNECT_TIMEOUT_S", "open_adapters", "open_backend", "open_broker"]
