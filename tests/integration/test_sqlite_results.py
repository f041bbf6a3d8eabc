"""SQLite result backend specifics: listing is served by indexes (no sort, no scan),
expired rows are invisible at once and deleted by the periodic sweep, and the watch
change log is trimmed by age."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from stem_core import ResultBackend, WorkerHeartbeat
from stem_core.adapters.sqlite import store
from stem_core.clock import utcnow

from .sqlite_helpers import rows


def count(path: Path, table: str) -> int:
    [(n,)] = rows(path, f"SELECT count(*) FROM {table}")
    return int(n)


@pytest.mark.parametrize("filters", [(), ("state",), ("queue",), ("task",), ("state", "queue")])
async def test_list_statuses_walks_an_index_newest_first(
    sqlite_backend: ResultBackend, db_path: Path, filters: tuple[str, ...]
) -> None:
    sql = store._LIST_BASE + "".join(f for key, f in store._LIST_FILTERS if key in filters) + store._LIST_ORDER
    params = {"ns": "n", "state": "queued", "queue": "q", "task": "t", "limit": 5, "offset": 0, "now": 0.0}
    conn = sqlite3.connect(db_path)
    plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    conn.close()
    # One index search, ordered by it: no scan and no sort step
    assert len(plan) == 1 and plan[0].startswith("SEARCH statuses USING INDEX statuses_"), plan
    assert "expiry" not in plan[0]


async def test_expired_rows_are_invisible_then_swept(sqlite_backend: ResultBackend, db_path: Path) -> None:
    # Given a short-lived status, heartbeat and record next to long-lived ones
    await sqlite_backend.set_status("short", "queued", ttl=0.05)
    await sqlite_backend.set_status("long", "queued")
    beat = WorkerHeartbeat(worker_id="w1", namespace="stem", host="h", pid=1, queues=["q"], concurrency=1,
                           inflight=[], processed=0, failed=0, retried=0, paused_queues=[], version="0",
                           timestamp=utcnow())
    await sqlite_backend.set_heartbeat(beat, ttl=0.05)
    await sqlite_backend.put_record("pause", "q", {"by": "ops"}, ttl=0.05)
    await asyncio.sleep(0.2)
    # Then they are invisible at once, although still stored
    assert await sqlite_backend.get_status("short") is None
    assert await sqlite_backend.list_heartbeats() == []
    assert await sqlite_backend.get_record("pause", "q") is None
    assert count(db_path, "statuses") == 2
    # When the next write comes after the sweep interval
    sqlite_backend._cleanup.make_due()  # type: ignore[attr-defined]
    await sqlite_backend.set_status("long", "running")
    # Then the expired rows are gone and the live one stays
    assert count(db_path, "statuses") == 1
    assert count(db_path, "heartbeats") == 0
    assert count(db_path, "records") == 0
    assert (await sqlite_backend.get_status("long")) is not None


async def test_the_change_log_is_trimmed_by_age(sqlite_backend: ResultBackend, db_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a task with a few updates in the change log
    for state in ("queued", "running", "succeeded"):
        await sqlite_backend.set_status("t", state)
    assert count(db_path, "status_events") == 3
    # When the sweep runs with a retention shorter than their age
    monkeypatch.setattr(store, "EVENT_RETENTION_S", 0.0)
    sqlite_backend._cleanup.make_due()  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)
    await sqlite_backend.set_status("t2", "queued")
    # Then only events newer than the retention are kept (the one just written)
    assert count(db_path, "status_events") == 1
    assert (await sqlite_backend.get_status("t")).state.value == "succeeded"  # type: ignore[union-attr]


async def test_trimming_the_whole_change_log_keeps_ids_growing(sqlite_backend: ResultBackend, db_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Given events that are all older than the retention
    for state in ("queued", "running"):
        await sqlite_backend.set_status("t", state)
    last = _max_event_id(db_path)
    monkeypatch.setattr(store, "EVENT_RETENTION_S", -60.0)  # "older than a minute from now": all of them
    # When the sweep runs (riding on a write) and another event follows
    sqlite_backend._cleanup.make_due()  # type: ignore[attr-defined]
    await sqlite_backend.set_status("t", "succeeded")
    await sqlite_backend.set_status("t", "failed")
    # Then the newest row survived each sweep, so ids never went back (watch cursors stay valid)
    assert count(db_path, "status_events") >= 1
    assert _max_event_id(db_path) == last + 2


async def test_a_backlog_of_expired_rows_goes_a_batch_per_write_until_none_is_left(
        sqlite_backend: ResultBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given more expired statuses (and change-log rows past retention) than one batch
    monkeypatch.setattr(store, "PRUNE_BATCH", 4)
    await sqlite_backend.set_statuses([(f"old{i}", "succeeded", {"queue": "q"}) for i in range(10)], ttl=0.05)
    await sqlite_backend.set_status("live", "queued")
    await asyncio.sleep(0.2)
    monkeypatch.setattr(store, "EVENT_RETENTION_S", 0.1)
    assert count(db_path, "statuses") == 11 and count(db_path, "status_events") == 11
    # When the sweep is due, and writes follow
    sqlite_backend._cleanup.make_due()  # type: ignore[attr-defined]
    left = []
    for state in ("running", "running", "running", "running"):
        await sqlite_backend.set_status("live", state)
        left.append(count(db_path, "statuses"))
    # Then each write deleted one batch (a full batch makes the next write sweep again),
    # until a batch came back short; the live status stays
    assert left == [7, 3, 1, 1]
    assert (await sqlite_backend.get_status("live")) is not None
    # And the change log went the same way, the newest row kept
    assert 1 <= count(db_path, "status_events") <= 5
    # And once a batch came back short, the next sweep waits for the interval again
    await sqlite_backend.set_statuses([("late", "succeeded", {"queue": "q"})], ttl=0.01)
    await asyncio.sleep(0.05)
    await sqlite_backend.set_status("live", "succeeded")
    assert count(db_path, "statuses") == 2


def _max_event_id(path: Path) -> int:
    [(last,)] = rows(path, "SELECT max(id) FROM status_events")
    return int(last)
