"""A row that does not hold a valid envelope (written straight into the file) neither
crashes a consumer nor blocks its queue: it becomes a dead letter ``invalid-envelope``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from stem_core import Broker, Delivery, Envelope
from stem_core.adapters.sqlite.rows import INVALID_NAME, RAW_KEEP_CHARS
from tests.support import eventually

from .sqlite_helpers import DEADLINE_S, take


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
    """The first delivery of ``queue``, claimed with room for more (so a claim meets the
    rows behind it too)."""
    [delivery] = await take(broker, [queue], 1, prefetch=5)
    return delivery


@pytest.mark.parametrize(
    "text, error",
    [
        ("{not json at all", "not valid JSON"),
        ('{"args": {}}', "no 'name'"),
        ('{"name": "x", "priority": 42}', "priority"),
        ('["a", "list"]', "JSON object"),
        (b"\xff\xfe binary", "JSON"),
        ('{"name": "' + "n" * 9000 + '"}', "at most 200"),  # issue 15: a 9 KB task name
    ],
)
async def test_an_invalid_row_is_dead_lettered_and_the_queue_moves_on(
    sqlite_broker: Broker, db_path: Path, namespace: str, text: str | bytes, error: str
) -> None:
    # Given a garbage row at the head of the queue (priority 9) and a valid message behind it
    good = Envelope(name="good.task", queue="work")
    await sqlite_broker.publish(good)
    write_row(db_path, namespace, "work", text)
    # When a consumer takes the queue
    delivery = await first(sqlite_broker, "work")
    # Then it gets the valid message, and the garbage row is a dead letter
    assert delivery.envelope.id == good.id
    entry = await sqlite_broker.get_dead_letter("work", "bad-1")
    assert entry is not None and entry.reason == "invalid-envelope"
    assert entry.envelope.name == INVALID_NAME and entry.envelope.queue == "work"
    assert error in entry.envelope.meta["error"] and error in entry.meta["error"]
    raw = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
    assert entry.envelope.meta["raw"] == raw[:RAW_KEEP_CHARS]
    # And the counters agree: nothing pending, one in flight, one dead
    [stats] = await sqlite_broker.queue_stats(["work"])
    assert (stats.pending, stats.inflight, stats.dead) == (0, 1, 1)


async def test_the_raw_text_kept_is_truncated(sqlite_broker: Broker, db_path: Path, namespace: str) -> None:
    write_row(db_path, namespace, "work", "{" + "x" * (RAW_KEEP_CHARS * 3))
    await sqlite_broker.publish(Envelope(name="good.task", queue="work"))
    await first(sqlite_broker, "work")
    page = await sqlite_broker.list_dead_letters("work")
    [entry] = page.entries
    assert len(entry.envelope.meta["raw"]) == RAW_KEEP_CHARS


async def test_a_queue_of_only_invalid_rows_does_not_hang_the_consumer(
    sqlite_broker: Broker, db_path: Path, namespace: str
) -> None:
    # Given only garbage rows
    for index in range(3):
        write_row(db_path, namespace, "junk", "garbage", msg_id=f"bad-{index}")
    # When a consumer looks (and then a valid message arrives)
    consumer = asyncio.create_task(first(sqlite_broker, "junk"))
    await eventually(lambda: dead_letters(sqlite_broker, "junk"), equals=3, timeout=DEADLINE_S)
    good = Envelope(name="good.task", queue="junk")
    await sqlite_broker.publish(good)
    # Then the consumer survived the garbage and delivers the valid message
    assert (await consumer).envelope.id == good.id
    page = await sqlite_broker.list_dead_letters("junk")
    assert [e.envelope.id for e in page.entries] == ["bad-2", "bad-1", "bad-0"]


async def test_peek_shows_an_invalid_row_as_a_placeholder(sqlite_broker: Broker, db_path: Path, namespace: str) -> None:
    write_row(db_path, namespace, "work", "nope", msg_id="bad-peek")
    [info] = await sqlite_broker.peek("work")
    assert info.envelope.name == INVALID_NAME and info.envelope.id == "bad-peek"
    assert info.envelope.meta["raw"] == "nope"


async def test_a_replayed_placeholder_is_a_valid_envelope(sqlite_broker: Broker, db_path: Path, namespace: str) -> None:
    # Given an invalid row already dead-lettered
    write_row(db_path, namespace, "work", "nope", msg_id="bad-replay")
    await sqlite_broker.publish(Envelope(name="good.task", queue="work"))
    await first(sqlite_broker, "work")
    # When it is replayed
    result = await sqlite_broker.replay_dead_letters("work")
    # Then the placeholder is back on the queue and decodes (a worker dead-letters it as an unknown task)
    assert result.count == 1
    [info] = await sqlite_broker.peek("work")
    assert info.envelope.id == "bad-replay" and info.envelope.name == INVALID_NAME
