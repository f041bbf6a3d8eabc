"""``sqlite://`` URLs and options, and driver errors translated to Stem's error tree with a
clear message naming the file (never a ``sqlite3`` exception)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from stem_core import Envelope, connect_backend, connect_broker
from stem_core.adapters.sqlite import SQLiteBackend, SQLiteBroker
from stem_core.errors import BackendUnavailable, BrokerUnavailable, ConfigurationError

from .sqlite_helpers import SQLiteOpener


def test_absolute_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert SQLiteBroker.from_url("sqlite:///abs/dir/stem.db").path == Path("/abs/dir/stem.db")
    assert SQLiteBroker.from_url("sqlite://rel.db").path == tmp_path / "rel.db"
    assert SQLiteBroker.from_url("sqlite://sub/dir/rel.db").path == tmp_path / "sub" / "dir" / "rel.db"
    assert SQLiteBroker.from_url("sqlite:///~/x.db").path == tmp_path / "home" / "x.db"
    assert SQLiteBroker.from_url("sqlite:///tmp/a%20b.db").path == Path("/tmp/a b.db")


def test_options_come_from_the_query_and_keywords() -> None:
    broker = SQLiteBroker.from_url("sqlite:///tmp/x.db?lease_seconds=5&poll_interval=0.002", busy_timeout=2)
    assert broker.lease_seconds == 5.0
    backend = SQLiteBackend.from_url("sqlite:///tmp/x.db?result_ttl=60", heartbeat_ttl=5)
    assert (backend.result_ttl, backend.heartbeat_ttl) == (60.0, 5.0)
    # Keywords win over the query string
    assert SQLiteBroker.from_url("sqlite:///tmp/x.db?lease_seconds=5", lease_seconds=7).lease_seconds == 7.0


@pytest.mark.parametrize(
    "url, options, match",
    [
        ("sqlite:///tmp/x.db?bogus=1", {}, "unknown sqlite:// option 'bogus'"),
        ("sqlite:///tmp/x.db", {"prefetch": 3}, "unknown sqlite:// option 'prefetch'"),
        ("sqlite:///tmp/x.db?lease_seconds=soon", {}, "not a number of seconds"),
        ("sqlite:///tmp/x.db", {"lease_seconds": -1}, "positive number"),
        ("sqlite:///tmp/x.db", {"busy_timeout": True}, "positive number"),
        ("sqlite://", {}, "names no file"),
        ("sqlite:///:memory:", {}, "memory://"),
        ("sqlite://:memory:", {}, "memory://"),
    ],
)
def test_bad_urls_and_options_are_configuration_errors(url: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SQLiteBroker.from_url(url, **options)


def test_result_ttl_is_not_a_broker_option() -> None:
    with pytest.raises(ConfigurationError, match="result_ttl"):
        SQLiteBroker.from_url("sqlite:///tmp/x.db", result_ttl=5)


async def test_an_uncreatable_folder_names_the_path(tmp_path: Path) -> None:
    # A regular file where a folder should be: mkdir fails whoever runs the test (root too)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = blocker / "sub" / "stem.db"
    with pytest.raises(ConfigurationError, match=str(path)):
        await connect_broker(f"sqlite://{path}")


async def test_a_file_that_is_not_a_database_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ConfigurationError, match=f"{path} is not a usable sqlite database"):
        await connect_backend(f"sqlite://{path}")


async def test_a_folder_in_place_of_the_file_names_the_path(tmp_path: Path) -> None:
    # (Permission bits cannot be used: the test runner may be root.)
    path = tmp_path / "dir.db"
    path.mkdir()
    with pytest.raises(ConfigurationError, match=str(path)):
        await connect_broker(f"sqlite://{path}")


async def test_a_writer_holding_the_lock_too_long_is_broker_unavailable(
    open_sqlite: SQLiteOpener, db_path: Path
) -> None:
    # Given a broker with a short busy timeout and another connection holding the write lock
    broker = await open_sqlite.broker(busy_timeout=0.05)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # When the broker needs to write, Then it reports the lock, naming the file
        with pytest.raises(BrokerUnavailable, match=f"{db_path} stayed locked"):
            await broker.publish(Envelope(name="t"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # And once the lock is released it works again
    await broker.publish(Envelope(name="t"))
    assert (await broker.queue_stats(["default"]))[0].pending == 1


async def test_backend_lock_errors_are_backend_unavailable(open_sqlite: SQLiteOpener, db_path: Path) -> None:
    backend = await open_sqlite.backend(busy_timeout=0.05)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendUnavailable, match="stayed locked"):
            await backend.set_status("t1", "queued")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_closed_broker_is_unavailable(open_sqlite: SQLiteOpener) -> None:
    broker = await open_sqlite.broker()
    await broker.close()
    await broker.close()  # idempotent
    with pytest.raises(BrokerUnavailable, match="closed"):
        await broker.publish(Envelope(name="t"))
    with pytest.raises(BrokerUnavailable, match="closed"):
        await broker.list_queues()
    # And connecting again reopens it
    await broker.connect()
    assert await broker.list_queues() == []
