"""The lease keeper: one renewal that hangs must not stall the renewals of other deliveries;
a delivery whose lease ran out while it waited is renewed before its body starts."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from datetime import datetime
from typing import AsyncIterator, TypeVar

from stem_core import Delivery, Stem, Worker, connect_broker
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


async def test_a_delivery_whose_lease_ran_out_while_it_waited_is_not_started_once_another_worker_has_it(
        namespace: str) -> None:
    # Given a worker with one slot, whose first task blocks the event loop (a loaded host, a
    # stopped process) past the short lease of the delivery waiting behind it, so that the
    # keeper cannot renew that lease, and another worker takes the delivery meanwhile
    lease = 0.3
    started: list[str] = []
    rival_has: list[str] = []
    taken = threading.Event()

    def rival(name: str) -> None:
        async def take() -> None:
            other = await connect_broker(f"memory://{name}", namespace=namespace)
            stream = other.consume("default", prefetch=1)
            delivery = await asyncio.wait_for(stream.__anext__(), 10)
            await other.extend_lease(delivery, 30)  # and holds it (unsettled) until the test is over
            rival_has.append(delivery.envelope.id)
            taken.set()
            await stream.aclose()

        asyncio.run(take())

    async with memory_app(MemoryBroker, namespace) as (app, broker):
        @app.task(name="blocks", visibility_timeout=30.0)
        async def blocks(ctx: TaskContext) -> None:
            time.sleep(lease)  # the waiting delivery's lease runs out: the rival may claim it
            thread = threading.Thread(target=rival, args=(broker.name,))
            thread.start()
            taken.wait(10)  # still blocking the loop: no renewal can run
            thread.join(10)

        @app.task(name="waits", visibility_timeout=lease)
        async def waits(ctx: TaskContext) -> None:
            started.append(ctx.task_id)

        await app.enqueue("blocks")
        waiting = await app.enqueue("waits")
        async with running(Worker(app, concurrency=1, prefetch=2)):
            await eventually(lambda: rival_has, message="the rival took the delivery")
            await asyncio.sleep(0.5)
        # Then the worker does not start it: its lease is another worker's now
        assert rival_has == [waiting]
        assert started == []
