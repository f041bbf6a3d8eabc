"""A row that does not hold a valid envelope (written straight into the file) neither
crashes a consumer nor blocks its queue: it becomes a dead letter ``invalid-envelope``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import pytest

from stem_core import Broker, Delivery, Envelope, connect_broker
from stem_core.adapters.sqlite.rows import INVALID_NAME, RAW_KEEP_CHARS
from tests.support import eventually

DEADLINE_S = 10.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "stem.db"


@pytest.fixture
async def broker(db_path: Path, namespace: str) -> AsyncIterator[Broker]:
    broker = await connect_broker(f"sqlite://{db_path}", namespace=namespace)
    yield broker
    await broker.close()


async def dead_letters(broker: Broker, queue: str) -> int:
    return (await broker.queue_stats([queue]))[0].dead


def write_row(path: Path, namespace: str, queue: str, text: str | bytes, msg_id: str = "bad-1", priority: int = 9) -> None:
    """Insert a job row by hand, as a buggy producer or a damaged file would leave it."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO jobs (ns, msg_id, queue, priority, envelope) VALUES (?, ?, ?, ?, ?)",
            (namespace, msg_id, queue, priority, text),
        )
    conn.close()


async def first(broker: Broker, queue: str) -> Delivery:
    deliveries = broker.consume([queue], prefetch=5)
    try:
        async with asyncio.timeout(DEADLINE_S):
            return await anext(deliveries)  # type: ignore[arg-type]
    finally:
        await deliveries.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text, error",
    [
        ("{not json at all", "not valid JSON"),
        ('{"args": {}}', "no 'name'"),
        ('{"name": "x", "priority": 42}', "priority"),
        ('["a", "list"]', "JSON object"),
        (b"\xff\xfe binary", "JSON"),
    ],
)
async def test_an_invalid_row_is_dead_lettered_and_the_queue_moves_on(
    broker: Broker, db_path: Path, namespace: str, text: str | bytes, error: str
) -> None:
    # Given a garbage row at the head of the queue (priority 9) and a valid message behind it
    good = Envelope(name="good.task", queue="work")
    await broker.publish(good)
    write_row(db_path, namespace, "work", text)
    # When a consumer takes the queue
    delivery = await first(broker, "work")
    # Then it gets the valid message, and the garbage row is a dead letter
    assert delivery.envelope.id == good.id
    entry = await broker.get_dead_letter("work", "bad-1")
    assert entry is not None and entry.reason == "invalid-envelope"
    assert entry.envelope.name == INVALID_NAME and entry.envelope.queue == "work"
    assert error in entry.envelope.meta["error"] and error in entry.meta["error"]
    raw = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
    assert entry.envelope.meta["raw"] == raw
    # And the counters agree: nothing pending, one in flight, one dead
    [stats] = await broker.queue_stats(["work"])
    assert (stats.pending, stats.inflight, stats.dead) == (0, 1, 1)


async def test_the_raw_text_kept_is_truncated(broker: Broker, db_path: Path, namespace: str) -> None:
    write_row(db_path, namespace, "work", "{" + "x" * (RAW_KEEP_CHARS * 3))
    await broker.publish(Envelope(name="good.task", queue="work"))
    await first(broker, "work")
    page = await broker.list_dead_letters("work")
    [entry] = page.entries
    assert len(entry.envelope.meta["raw"]) == RAW_KEEP_CHARS


async def test_a_queue_of_only_invalid_rows_does_not_hang_the_consumer(broker: Broker, db_path: Path, namespace: str) -> None:
    # Given only garbage rows
    for index in range(3):
        write_row(db_path, namespace, "junk", "garbage", msg_id=f"bad-{index}")
    # When a consumer looks (and then a valid message arrives)
    consumer = asyncio.create_task(first(broker, "junk"))
    await eventually(lambda: dead_letters(broker, "junk"), equals=3, timeout=DEADLINE_S)
    good = Envelope(name="good.task", queue="junk")
    await broker.publish(good)
    # Then the consumer survived the garbage and delivers the valid message
    assert (await consumer).envelope.id == good.id
    assert [e.envelope.id for e in (await broker.list_dead_letters("junk")).entries] == ["bad-2", "bad-1", "bad-0"]


async def test_peek_shows_an_invalid_row_as_a_placeholder(broker: Broker, db_path: Path, namespace: str) -> None:
    write_row(db_path, namespace, "work", "nope", msg_id="bad-peek")
    [info] = await broker.peek("work")
    assert info.envelope.name == INVALID_NAME and info.envelope.id == "bad-peek"
    assert info.envelope.meta["raw"] == "nope"


async def test_a_replayed_placeholder_is_a_valid_envelope(broker: Broker, db_path: Path, namespace: str) -> None:
    # Given an invalid row already dead-lettered
    write_row(db_path, namespace, "work", "nope", msg_id="bad-replay")
    await broker.publish(Envelope(name="good.task", queue="work"))
    await first(broker, "work")
    # When it is replayed
    result = await broker.replay_dead_letters("work")
    # Then the placeholder is back on the queue and decodes (a worker dead-letters it as an unknown task)
    assert result.count == 1
    [info] = await broker.peek("work")
    assert info.envelope.id == "bad-replay" and info.envelope.name == INVALID_NAME
