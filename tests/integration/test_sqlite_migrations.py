"""The numbered migrations build exactly the schema the SQLite adapter's queries need, and
several processes opening one fresh file at once migrate it exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from stem_core import connect_backend, connect_broker
from stem_core.adapters.sqlite.schema import current_version, latest_version, migrate, migrations, queries, split_statements
from stem_core.errors import ConfigurationError

EXPECTED_TABLES = {
    "schema_version", "jobs", "queue_counts", "dead_letters", "broadcasts", "subscribers",
    "statuses", "status_events", "heartbeats", "records", "audit", "sqlite_sequence", "schedules",
}
EXPECTED_INDEXES = {
    "jobs_ready", "jobs_delayed", "jobs_leased", "jobs_msg_id", "dead_letters_age", "broadcasts_channel",
    "subscribers_channel", "statuses_seq", "statuses_state", "statuses_queue", "statuses_task", "statuses_expiry",
    "status_events_task", "heartbeats_expiry", "records_expiry", "records_written", "audit_ns",
}
EXPECTED_TRIGGERS = {
    "jobs_count_insert", "jobs_count_state", "jobs_count_move", "jobs_count_delete",
    "dead_count_insert", "dead_count_delete",
}
EXPECTED_JOB_COLUMNS = [
    "id", "ns", "msg_id", "queue", "name", "priority", "state", "enqueued_at", "not_before", "ready_at",
    "visibility_ms", "attempt", "token", "delivery_count", "locked_by", "locked_until", "envelope",
]
PROCESSES = 6
# A peer process: imports done, it says "ready", waits for the start file (so all peers
# open the fresh file at the same moment), opens it through the public API and prints
# the schema version it finds.
PEER = """
import asyncio, os, sqlite3, sys, time
from stem_core import connect_broker
url, path, go = sys.argv[1:4]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
async def main():
    broker = await connect_broker(url, namespace="mig")
    await broker.list_queues()
    await broker.close()
asyncio.run(main())
print(sqlite3.connect(path).execute("SELECT max(version) FROM schema_version").fetchone()[0])
"""


def _names(conn: sqlite3.Connection, kind: str) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_autoindex%'", (kind,))
    return {row[0] for row in rows}


def test_migrations_build_the_schema(tmp_path: Path) -> None:
    # Given a fresh file
    conn = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    # When it is migrated
    applied = migrate(conn)
    # Then every migration ran once, in order, and the schema is the expected one
    assert applied == [version for version, _, _ in migrations()] and applied[-1] == latest_version()
    assert current_version(conn) == latest_version()
    assert _names(conn, "table") == EXPECTED_TABLES
    assert _names(conn, "index") == EXPECTED_INDEXES
    assert _names(conn, "trigger") == EXPECTED_TRIGGERS
    assert [row[1] for row in conn.execute("PRAGMA table_info(jobs)")] == EXPECTED_JOB_COLUMNS
    # And every named query compiles against it (catches a column renamed on one side only)
    for name, text in queries().items():
        try:
            conn.execute(f"EXPLAIN {text}", {}).fetchall()
        except sqlite3.ProgrammingError:
            pass  # compiled fine, only the bindings were missing
        except sqlite3.Error as exc:  # pragma: no cover - the failure message names the query
            pytest.fail(f"query {name} does not compile: {exc}")
    # And migrating again changes nothing
    assert migrate(conn) == []


def _migrate_to(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL)")
    for number, name, statements in migrations():
        if number <= version:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (number, name))


@pytest.mark.parametrize("trimmed", [False, True])
def test_the_change_log_keeps_its_events_and_ids_across_0003(tmp_path: Path, trimmed: bool) -> None:
    # Given a version 2 file whose change log handed out ids 1..5 (all trimmed since, or not)
    conn = sqlite3.connect(tmp_path / "v2.db", isolation_level=None)
    _migrate_to(conn, 2)
    for n in range(5):
        conn.execute("INSERT INTO status_events (ns, task_id, body, created_at) VALUES ('n', 't', ?, ?)", (f"b{n}", n))
    if trimmed:
        conn.execute("DELETE FROM status_events")
    # When it is migrated
    assert migrate(conn) == [v for v, _, _ in migrations() if v > 2]
    # Then the events are kept, and the next event's id follows the last one handed out
    kept = conn.execute("SELECT id, body FROM status_events WHERE ns = 'n' ORDER BY id").fetchall()
    assert kept == ([] if trimmed else [(n + 1, f"b{n}") for n in range(5)])
    cursor = conn.execute("INSERT INTO status_events (ns, task_id, body, created_at) VALUES ('n', 't', 'new', 9)")
    assert cursor.lastrowid == 6
    assert conn.execute("SELECT count(*) FROM sqlite_sequence WHERE name = 'status_events'").fetchone()[0] == 0


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "newer.db", isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO schema_version (version, name) VALUES (?, 'from_the_future')", (latest_version() + 1,))
    with pytest.raises(ConfigurationError, match="newer than this Stem supports"):
        migrate(conn)


def test_trigger_bodies_are_split_as_whole_statements() -> None:
    script = "-- c\nCREATE TABLE t (a);\nCREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n"
    assert split_statements(script) == (
        "CREATE TABLE t (a);",
        "CREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;",
    )


async def test_open_sets_wal_and_creates_parent_folders(tmp_path: Path) -> None:
    # Given a path whose folders do not exist yet
    path = tmp_path / "a" / "b" / "stem.db"
    # When a broker and a backend open it
    broker = await connect_broker(f"sqlite://{path}", namespace="n1")
    backend = await connect_backend(f"sqlite://{path}", namespace="n1")
    await broker.close()
    await backend.close()
    # Then the file exists in WAL mode at the latest schema
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert current_version(conn) == latest_version()


@pytest.mark.slow
async def test_concurrent_first_use_migrates_once(tmp_path: Path) -> None:
    # Given several processes that open one fresh file at the same moment
    path = tmp_path / "race.db"
    go = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", PEER, f"sqlite://{path}", str(path), str(go),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).decode().strip() == "ready"
    # When they are all released at once
    go.touch()
    results = [await proc.communicate() for proc in procs]
    # Then every one of them succeeded and saw the latest schema
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == str(latest_version())
    # And each migration was recorded exactly once
    conn = sqlite3.connect(path)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [version for version, _, _ in migrations()]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
