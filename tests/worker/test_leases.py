"""The lease keeper: one renewal that hangs must not stall the renewals of other deliveries."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from datetime import datetime
from typing import AsyncIterator, TypeVar

from stem_core import Delivery, Stem, Worker
from stem_core.adapters.memory import MemoryBroker, drop_stores
from stem_core.worker import TaskContext
from tests.support import eventually
from tests.worker.helpers import running

B = TypeVar("B", bound=MemoryBroker)


@asynccontextmanager
async def memory_app(broker_class: type[B], namespace: str) -> AsyncIterator[tuple[Stem, B]]:
    """A Stem app on a fresh memory store whose broker is ``broker_class``; closed and
    dropped afterwards."""
    name = uuid.uuid4().hex
    broker = broker_class.from_url(f"memory://{name}", namespace=namespace)
    app = Stem(broker=broker, backend=f"memory://{name}", namespace=namespace)
    try:
        yield app, broker
    finally:
        await app.close()
        drop_stores(name)


class HangingRenewals(MemoryBroker):
    """The memory broker, except that renewing a ``hangs`` task waits until ``release`` is set
    (a database lock held elsewhere, a broker that stopped answering)."""

    release: asyncio.Event
    renewed: Counter[str]

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        if delivery.envelope.name == "hangs":
            await self.release.wait()
        else:
            self.renewed[delivery.envelope.id] += 1
        return await super()._extend_lease(delivery, seconds)


async def test_a_hanging_renewal_does_not_stall_the_others(namespace: str) -> None:
    # Given a worker holding two deliveries with short leases, whose renewals fall due together,
    # and a broker on which renewing one of them hangs
    finish = asyncio.Event()
    async with memory_app(HangingRenewals, namespace) as (app, broker):
        broker.release, broker.renewed = asyncio.Event(), Counter()
        for task_name in ("hangs", "healthy"):
            @app.task(name=task_name, visibility_timeout=1.0)
            async def body(ctx: TaskContext) -> None:
                await finish.wait()

        await app.enqueue("hangs")
        healthy = await app.enqueue("healthy")
        try:
            async with running(Worker(app, concurrency=2, prefetch=2)):
                # Then the healthy delivery keeps being renewed while the other renewal hangs
                await eventually(lambda: broker.renewed[healthy] >= 2, message="healthy lease renewed twice")
                broker.release.set()
                finish.set()
        finally:
            broker.release.set()
            finish.set()


class FailingOnce(MemoryBroker):
    """The memory broker, except that the first renewal fails with a bug (not a Stem error)."""

    calls: Counter[str]

    async def _extend_lease(self, delivery: Delivery, seconds: float) -> datetime:
        self.calls["all"] += 1
        if self.calls["all"] == 1:
            raise RuntimeError("a bug in an adapter")
        self.calls["renewed"] += 1
        return await super()._extend_lease(delivery, seconds)


async def test_renewals_go_on_after_an_unexpected_error(namespace: str) -> None:
    # Given a worker holding one delivery, whose first renewal fails with an unexpected error
    finish = asyncio.Event()
    async with memory_app(FailingOnce, namespace) as (app, broker):
        broker.calls = Counter()

        @app.task(name="long", visibility_timeout=2.0)
        async def long(ctx: TaskContext) -> None:
            await finish.wait()

        await app.enqueue("long")
        try:
            async with running(Worker(app, concurrency=1, prefetch=1)):
                # Then the keeper logs it and renews again, instead of dying with it
                await eventually(lambda: broker.calls["renewed"] >= 2, message="two renewals after the error")
                finish.set()
        finally:
            finish.set()
