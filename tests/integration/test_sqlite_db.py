"""The database thread: calls queued together share one commit, each still succeeds or
fails on its own, and nothing is reported done before the commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from stem_core.adapters.sqlite.db import SQLiteDatabase, immediate
from stem_core.errors import BrokerUnavailable, ConfigurationError

from .sqlite_helpers import DEADLINE_S, rows


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[SQLiteDatabase]:
    database = SQLiteDatabase(db_path, busy_timeout_s=5.0, unavailable=BrokerUnavailable, label="test")
    await database.open()
    await database.run(_create)
    yield database
    await database.close()


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")


def _insert(conn: sqlite3.Connection, value: int) -> int:
    with immediate(conn):
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
    return value


def _insert_then_fail(conn: sqlite3.Connection, value: int) -> None:
    with immediate(conn):
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        raise ValueError("refused after writing")


def _bad_sql(conn: sqlite3.Connection) -> None:
    with immediate(conn):
        conn.execute("INSERT INTO no_such_table VALUES (1)")


def _values(path: Path) -> list[int]:
    return sorted(row[0] for row in rows(path, "SELECT v FROM t"))


async def hold_the_thread(db: SQLiteDatabase) -> tuple["asyncio.Future[bool]", threading.Event]:
    """The database (writer) thread busy in a call until ``gate`` is set; that call's future."""
    started, gate = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> bool:
        started.set()
        return gate.wait(DEADLINE_S)

    blocker = db.submit(block)
    assert await asyncio.to_thread(started.wait, DEADLINE_S)
    return blocker, gate


async def test_queued_calls_share_one_commit_and_fail_alone(
    db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the database thread held busy, with calls queued behind it (two of them failing)
    groups: list[int] = []
    assert db._link is not None
    real_group = db._link.thread._group

    def recording_group(calls: list[Any]) -> list[tuple[bool, Any]]:
        groups.append(len(calls))
        return real_group(calls)

    monkeypatch.setattr(db._link.thread, "_group", recording_group)
    blocker, gate = await hold_the_thread(db)
    good = [db.submit(_insert, value) for value in range(1, 6)]
    failing = db.submit(_insert_then_fail, 100)
    broken = db.submit(_bad_sql)
    more = db.submit(_insert, 6)
    # When the thread is released
    gate.set()
    assert await asyncio.wait_for(blocker, DEADLINE_S) is True
    # Then the good calls all succeeded, in one group commit with the failing ones
    assert [await asyncio.wait_for(f, DEADLINE_S) for f in good + [more]] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="refused after writing"):
        await failing
    with pytest.raises(BrokerUnavailable, match="no such table"):
        await broken
    assert groups == [1, 8]
    # And only the failing calls' writes were undone
    assert _values(db.path) == [1, 2, 3, 4, 5, 6]


async def test_savepoint_journals_are_kept_in_memory(db: SQLiteDatabase) -> None:
    # A group commit's SAVEPOINTs each need a statement journal; on disk that is a new
    # temporary file per savepoint (docs/performance.md: 11 % of a drain). The undo itself
    # is covered above (the failing calls' writes are rolled back from it).
    assert await db.run(lambda conn: conn.execute("PRAGMA temp_store").fetchone()[0]) == 2  # MEMORY


async def test_a_lone_call_runs_in_its_own_transaction(db: SQLiteDatabase) -> None:
    assert await db.run(_insert, 7) == 7
    with pytest.raises(ValueError):
        await db.run(_insert_then_fail, 8)
    assert _values(db.path) == [7]
    # And the connection is not left inside a transaction
    assert await db.run(lambda conn: conn.in_transaction) is False


async def test_a_closed_database_refuses_calls(db: SQLiteDatabase) -> None:
    await db.close()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await db.run(_insert, 1)


async def test_reads_run_on_a_read_only_connection_beside_a_busy_writer(db: SQLiteDatabase) -> None:
    # Given a value written, and the writer thread held busy
    await db.run(_insert, 1)
    blocker, gate = await hold_the_thread(db)
    # When a read is made meanwhile
    found = await asyncio.wait_for(db.read(lambda conn: [r[0] for r in conn.execute("SELECT v FROM t")]), DEADLINE_S)
    # Then it answered on its own connection while the writer was still busy
    assert found == [1] and not blocker.done()
    gate.set()
    await blocker
    # And that connection refuses writes: a read that tries one fails and changes nothing
    with pytest.raises(ConfigurationError, match="readonly"):
        await db.read(lambda conn: conn.execute("INSERT INTO t (v) VALUES (2)"))
    assert _values(db.path) == [1]


async def test_a_closed_database_refuses_reads(db: SQLiteDatabase) -> None:
    await db.read(lambda conn: None)
    await db.close()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await db.read(lambda conn: None)


@pytest.mark.parametrize("folder_exists", [True, False])
async def test_the_database_and_its_wal_files_are_created_owner_only(tmp_path: Path, folder_exists: bool) -> None:
    # Given a permissive umask (issue 15: the file was created 0644, readable by every user)
    import os
    import stat

    from stem_core import connect_backend, connect_broker
    from stem_core.envelope import Envelope

    folder = tmp_path / "data" / "stem"
    if folder_exists:
        folder.mkdir(parents=True)
    path = folder / "stem.db"
    old = os.umask(0o022)
    try:
        broker = await connect_broker(f"sqlite://{path}", namespace="perm")
        backend = await connect_backend(f"sqlite://{path}", namespace="perm")
        await broker.publish(Envelope(name="t"))
    finally:
        os.umask(old)
    try:
        # Then the file and its -wal/-shm are readable and writable by their owner only
        for name in ("stem.db", "stem.db-wal", "stem.db-shm"):
            mode = stat.S_IMODE(os.stat(folder / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        if not folder_exists:
            assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    finally:
        await broker.close()
        await backend.close()


async def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    import os
    import stat

    from stem_core import connect_broker

    path = tmp_path / "shared.db"
    path.touch()
    os.chmod(path, 0o640)
    broker = await connect_broker(f"sqlite://{path}", namespace="perm")
    await broker.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
