"""PostgreSQL: ``Broker.enqueue`` and ``Broker.ack_with_status`` take one round trip when the
result backend is on the broker's database (any namespace), and fall back to the two-step
path when it is not (another database, another adapter). Real server; the round trips are
counted at ``PostgresDatabase.run``, the one place every statement of both adapters goes through.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

import psycopg
import pytest

from stem_core import Envelope, TaskState, connect_backend, connect_broker
from stem_core.adapters.postgres.connection import PostgresDatabase, quote_ident, schema_name
from stem_core.errors import BackendUnavailable, StemError
from tests.specs import require_service
from tests.specs.postgres import URL

# The same server, another database: the backend is reachable, but not in our statements.
OTHER_DATABASE_URL = URL.rsplit("/", 1)[0] + "/postgres"


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    counter = RoundTrips()
    real = PostgresDatabase.run

    async def counted(self: PostgresDatabase, fn: Any) -> Any:
        counter.count += 1
        return await real(self, fn)

    monkeypatch.setattr(PostgresDatabase, "run", counted)
    return counter


@pytest.fixture
async def namespaces() -> AsyncIterator[list[tuple[str, str]]]:
    """``(url, namespace)`` pairs to drop after the test."""
    require_service("postgres")
    made: list[tuple[str, str]] = []
    yield made
    for url, namespace in made:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema_name(namespace))} CASCADE")


def fresh(namespaces: list[tuple[str, str]], url: str = URL) -> str:
    namespace = "t" + uuid.uuid4().hex[:12]
    namespaces.append((url, namespace))
    return namespace


async def received(broker: Any, queue: str) -> Any:
    it = broker.consume(queue)
    try:
        return await it.__anext__()
    finally:
        await it.aclose()


@pytest.mark.parametrize("same_namespace", [True, False], ids=["same-namespace", "other-namespace"])
async def test_co_located_backend_takes_one_round_trip_each(
    trips: RoundTrips, namespaces: list[tuple[str, str]], same_namespace: bool,
) -> None:
    ns = fresh(namespaces)
    backend_ns = ns if same_namespace else fresh(namespaces)
    async with await connect_broker(URL, namespace=ns) as broker, \
            await connect_backend(URL + "?application_name=stem-results", namespace=backend_ns) as backend:
        one, many = Envelope(name="t", queue="q"), [Envelope(name="t", queue="q") for _ in range(3)]
        trips.count = 0
        await broker.enqueue([one], backend)
        assert trips.count == 1
        await broker.enqueue(many, backend)
        assert trips.count == 2
        assert [s.state for s in await backend.list_statuses(limit=10)] == [TaskState.QUEUED] * 4
        delivery = await received(broker, "q")
        trips.count = 0
        await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload=[1])
        assert trips.count == 1
        status = await backend.get_status(delivery.envelope.id)
        assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == [1]
        (stats,) = await broker.queue_stats(["q"])
        assert (stats.pending, stats.inflight, stats.completed_total) == (3, 0, 1)


async def test_backend_in_another_database_takes_the_two_step_path(
    trips: RoundTrips, namespaces: list[tuple[str, str]],
) -> None:
    ns = fresh(namespaces)
    namespaces.append((OTHER_DATABASE_URL, ns))
    async with await connect_broker(URL, namespace=ns) as broker, \
            await connect_backend(OTHER_DATABASE_URL, namespace=ns) as backend:
        sent = Envelope(name="t", queue="q")
        trips.count = 0
        await broker.enqueue([sent], backend)
        assert trips.count == 2  # the status on the backend's database, then the publish
        delivery = await received(broker, "q")
        trips.count = 0
        await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED, payload="ok")
        assert trips.count == 2
        status = await backend.get_status(sent.id)
        assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == "ok"
        (stats,) = await broker.queue_stats(["q"])
        assert (stats.pending, stats.inflight) == (0, 0)


async def test_another_adapter_as_backend_takes_the_two_step_path(namespaces: list[tuple[str, str]]) -> None:
    ns = fresh(namespaces)
    async with await connect_broker(URL, namespace=ns) as broker, \
            await connect_backend(f"memory://{uuid.uuid4().hex}", namespace=ns) as backend:
        sent = Envelope(name="t", queue="q")
        await broker.enqueue([sent], backend)
        assert (await backend.get_status(sent.id)).state == TaskState.QUEUED  # type: ignore[union-attr]
        delivery = await received(broker, "q")
        await broker.ack_with_status(delivery, backend, TaskState.SUCCEEDED)
        assert (await backend.get_status(sent.id)).state == TaskState.SUCCEEDED  # type: ignore[union-attr]


async def test_a_closed_backend_is_not_written_through_the_broker(namespaces: list[tuple[str, str]]) -> None:
    ns = fresh(namespaces)
    async with await connect_broker(URL, namespace=ns) as broker:
        backend = await connect_backend(URL, namespace=ns)
        await backend.close()
        with pytest.raises(BackendUnavailable, match="closed"):
            await broker.enqueue([Envelope(name="t", queue="q")], backend)
        (stats,) = await broker.queue_stats(["q"])
        assert stats.pending == 0


async def test_settles_of_one_turn_are_one_statement_and_keep_fencing(
    trips: RoundTrips, namespaces: list[tuple[str, str]],
) -> None:
    # Given three held deliveries and one stale receipt (taken back and handed out again)
    ns = fresh(namespaces)
    async with await connect_broker(URL, namespace=ns) as broker, \
            await connect_backend(URL, namespace=ns) as backend:
        sent = [Envelope(name="t", queue="q") for _ in range(4)]
        await broker.enqueue(sent, backend)
        it = broker.consume("q", prefetch=4)
        held = [await it.__anext__() for _ in range(4)]
        stale = held[3]
        assert await broker.requeue("q", [stale.envelope.id]) == 1
        fresh_holder = await received(broker, "q")
        assert fresh_holder.envelope.id == stale.envelope.id
        # When all four settle in the same event-loop turn
        trips.count = 0
        await asyncio.gather(*(
            broker.ack_with_status(d, backend, TaskState.SUCCEEDED, payload=i) for i, d in enumerate(held)
        ))
        # Then it took one statement; every status is stored, the stale one acked nothing
        assert trips.count == 1
        for i, d in enumerate(held):
            status = await backend.get_status(d.envelope.id)
            assert status is not None and status.state == TaskState.SUCCEEDED and status.payload == i
        (stats,) = await broker.queue_stats(["q"])
        assert (stats.pending, stats.inflight, stats.completed_total) == (0, 1, 3)
        await broker.ack(fresh_holder)
        await it.aclose()


async def test_a_failed_settle_batch_raises_in_every_caller(namespaces: list[tuple[str, str]]) -> None:
    ns = fresh(namespaces)
    async with await connect_broker(URL, namespace=ns) as broker, \
            await connect_backend(URL, namespace=ns) as backend:
        await broker.enqueue([Envelope(name="t", queue="q") for _ in range(2)], backend)
        it = broker.consume("q", prefetch=2)
        held = [await it.__anext__() for _ in range(2)]
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            await conn.execute(f"DROP TABLE {quote_ident(schema_name(ns))}.statuses CASCADE")
        results = await asyncio.gather(
            *(broker.ack_with_status(d, backend, TaskState.SUCCEEDED) for d in held), return_exceptions=True,
        )
        assert all(isinstance(r, StemError) for r in results), results
        (stats,) = await broker.queue_stats(["q"])
        assert stats.inflight == 2  # nothing was acked
        await it.aclose()
