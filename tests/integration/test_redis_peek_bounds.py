"""Issue 15: a Redis peek did ``offset + limit`` work inside one Lua call (offset 99,950
on a 100k queue blocked Redis 630 ms). Now every ``peek.lua`` call reads at most one
page of entries, however deep the cursor or the offset: checked by the entries each call
reports it read (no timings)."""

from __future__ import annotations

from typing import Any

import pytest

from stem_core import Envelope
from stem_core.adapters.redis import RedisBroker
from stem_core.adapters.redis.inspect import PEEK_SKIP_CHUNK
from tests.specs import AdapterSpec, require_service
from tests.specs.redis import SPEC

TOTAL = 3000


@pytest.fixture
def broker_spec() -> AdapterSpec:
    require_service("redis")
    return SPEC


class Spy:
    """Records the entries each ``peek.lua`` call read (its reply's second item)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.reads: list[int] = []
        conn = broker._inspector._conn  # white box: the one way scripts are called
        original = conn.call

        async def call(name: str, keys: Any, args: Any) -> Any:
            reply = await original(name, keys, args)
            if name == "peek":
                self.reads.append(int(reply[1]))
            return reply

        conn.call = call  # type: ignore[method-assign]


async def filled(broker_factory: Any) -> tuple[RedisBroker, list[str]]:
    broker = await broker_factory()
    sent = [Envelope(name="bulk", queue="deep", args={"i": i}) for i in range(TOTAL)]
    for k in range(0, TOTAL, 500):
        await broker.publish_many(sent[k:k + 500])
    return broker, [e.id for e in sent]


async def test_a_deep_cursor_costs_one_page(broker_factory: Any) -> None:
    # Given a queue of 3000 and a cursor 2,000 messages deep
    broker, ids = await filled(broker_factory)
    cursor = None
    for _ in range(2):
        page = await broker.peek_page("deep", limit=1000, cursor=cursor)
        cursor = page.next_cursor
    spy = Spy(broker)
    # When the next ten are peeked from there
    page = await broker.peek_page("deep", limit=10, cursor=cursor)
    # Then they are the right ten, read with one call that touched ten entries
    assert [m.envelope.id for m in page.messages] == ids[2000:2010]
    assert spy.reads == [10]


async def test_a_deep_offset_is_walked_in_bounded_calls(broker_factory: Any) -> None:
    # Given a queue of 3000
    broker, ids = await filled(broker_factory)
    spy = Spy(broker)
    # When ten are peeked at offset 2,500
    infos = await broker.peek("deep", limit=10, offset=2500)
    # Then they are the right ten, and no script call read more than a skip chunk
    assert [i.envelope.id for i in infos] == ids[2500:2510]
    assert len(spy.reads) == 2500 // PEEK_SKIP_CHUNK + 1
    assert max(spy.reads) <= PEEK_SKIP_CHUNK and spy.reads[-1] == 10


async def test_delayed_and_inflight_cursors_cost_one_page(broker_factory: Any) -> None:
    from stem_core.envelope import delay_to_not_before

    broker = await broker_factory()
    sent = [Envelope(name="later", queue="dq", not_before=delay_to_not_before(3600 + i)) for i in range(300)]
    await broker.publish_many(sent)
    first = await broker.peek_page("dq", state="delayed", limit=250)
    spy = Spy(broker)
    rest = await broker.peek_page("dq", state="delayed", limit=25, cursor=first.next_cursor)
    assert [m.envelope.id for m in rest.messages] == [e.id for e in sent[250:275]]
    assert spy.reads == [25]
