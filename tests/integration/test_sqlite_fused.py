"""SQLite broker and result backend on one file: they share one connection and thread
(``db.Link``), and ``Broker.enqueue`` / ``Broker.ack_with_status`` are then one
transaction, one hop to the database thread; with the backend on another file they
fall back to the two separate steps. (What both paths store is the contract suite's
business: tests/contract/test_broker_enqueue_settle.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stem_core import Broker, Envelope, ResultBackend, TaskState
from stem_core.adapters.sqlite.thread import DatabaseThread
from stem_core.errors import BackendUnavailable, StorageRejected

from .sqlite_helpers import DEADLINE_S, SQLiteOpener, rows


@pytest.fixture
async def far_backend(open_sqlite: SQLiteOpener, tmp_path: Path) -> ResultBackend:
    """A result backend on another file than the broker's."""
    return await open_sqlite.backend(path=tmp_path / "results.db")


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function sent to a database thread from now on (one per hop)."""
    sent: list[str] = []
    real_submit = DatabaseThread.submit

    def counting_submit(self: DatabaseThread, loop: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return real_submit(self, loop, fn, *args, **kwargs)

    monkeypatch.setattr(DatabaseThread, "submit", counting_submit)
    return sent


async def test_a_broker_and_backend_on_one_file_share_a_connection(
    sqlite_broker: Broker, sqlite_backend: ResultBackend
) -> None:
    assert sqlite_broker._db.shares_link(sqlite_backend._db)  # type: ignore[attr-defined]
    assert sqlite_broker._db._link.conn is sqlite_backend._db._link.conn  # type: ignore[attr-defined]


async def test_each_broker_pairs_up_with_one_backend(open_sqlite: SQLiteOpener) -> None:
    # Given two apps' adapters opened on one file, each app's broker then its backend
    opened = [await open_sqlite.broker(), await open_sqlite.backend()]
    opened += [await open_sqlite.broker(), await open_sqlite.backend()]
    broker_a, backend_a, broker_b, backend_b = (x._db for x in opened)  # type: ignore[attr-defined]
    # Then each broker shares a connection with one backend, and no more
    assert broker_a.shares_link(backend_a) and broker_b.shares_link(backend_b)
    assert not broker_a.shares_link(broker_b) and not broker_a.shares_link(backend_b)


async def test_enqueue_is_one_hop_when_the_backend_shares_the_file(
    sqlite_broker: Broker, sqlite_backend: ResultBackend, hops: list[str], db_path: Path
) -> None:
    one, many = Envelope(name="t", queue="q"), [Envelope(name="t", queue="q") for _ in range(3)]
    await sqlite_broker.enqueue([one], sqlite_backend)
    await sqlite_broker.enqueue(many, sqlite_backend)
    assert hops == ["enqueue", "enqueue"]
    # statuses and rows both there
    statuses = rows(db_path, "SELECT task_id, state FROM statuses ORDER BY seq")
    assert statuses == [(e.id, "queued") for e in [one, *many]]
    assert rows(db_path, "SELECT count(*) FROM jobs")[0][0] == 4


async def test_ack_with_status_is_one_hop_when_the_backend_shares_the_file(
    sqlite_broker: Broker, sqlite_backend: ResultBackend, hops: list[str], db_path: Path
) -> None:
    sent = Envelope(name="t", queue="q")
    await sqlite_broker.enqueue([sent], sqlite_backend)
    deliveries = sqlite_broker.consume(["q"])
    delivery = await asyncio.wait_for(anext(deliveries), DEADLINE_S)  # type: ignore[arg-type]
    hops.clear()
    await sqlite_broker.ack_with_status(delivery, sqlite_backend, TaskState.SUCCEEDED, payload=1)
    await deliveries.aclose()  # type: ignore[attr-defined]
    assert hops == ["ack"]
    assert rows(db_path, "SELECT state FROM statuses") == [("succeeded",)]
    assert rows(db_path, "SELECT count(*) FROM jobs") == [(0,)]


async def test_with_the_backend_on_another_file_both_steps_run_apart(
    sqlite_broker: Broker, far_backend: ResultBackend, hops: list[str], db_path: Path, tmp_path: Path
) -> None:
    sent = Envelope(name="t", queue="q")
    await sqlite_broker.enqueue([sent], far_backend)
    await sqlite_broker.enqueue([Envelope(name="t", queue="q"), Envelope(name="t", queue="q")], far_backend)
    assert hops == ["set_status", "publish", "set_statuses", "publish"]
    deliveries = sqlite_broker.consume(["q"])
    delivery = await asyncio.wait_for(anext(deliveries), DEADLINE_S)  # type: ignore[arg-type]
    hops.clear()
    await sqlite_broker.ack_with_status(delivery, far_backend, TaskState.SUCCEEDED, payload=1)
    await deliveries.aclose()  # type: ignore[attr-defined]
    assert hops == ["set_status", "ack"]
    assert rows(db_path, "SELECT count(*) FROM statuses") == [(0,)]
    assert len(rows(tmp_path / "results.db", "SELECT task_id FROM statuses")) == 3


async def test_a_closed_backend_is_not_fused_into(
    sqlite_broker: Broker, sqlite_backend: ResultBackend, db_path: Path
) -> None:
    await sqlite_backend.close()
    assert not sqlite_broker._db.shares_link(sqlite_backend._db)  # type: ignore[attr-defined]
    # As with set_status then publish: the status write fails, nothing is published
    with pytest.raises(BackendUnavailable, match="closed"):
        await sqlite_broker.enqueue([Envelope(name="t", queue="q")], sqlite_backend)
    assert rows(db_path, "SELECT count(*) FROM jobs") == [(0,)]


async def test_a_failed_publish_undoes_the_statuses_of_its_enqueue(
    sqlite_broker: Broker, sqlite_backend: ResultBackend, db_path: Path
) -> None:
    # Given a file that refuses rows for one queue (a real SQLite error inside the transaction)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.queue = 'refused' "
                 "BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    conn.close()
    good, bad = Envelope(name="t", queue="fine"), Envelope(name="t", queue="refused")
    # When a batch with one refused envelope is enqueued
    # (a constraint the file enforces: refused for good, not "unavailable")
    with pytest.raises(StorageRejected, match="refused by test"):
        await sqlite_broker.enqueue([good, bad], sqlite_backend)
    # Then neither status nor row was stored
    assert await sqlite_backend.get_status(good.id) is None and await sqlite_backend.get_status(bad.id) is None
    assert rows(db_path, "SELECT count(*) FROM jobs") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM status_events") == [(0,)]


async def test_set_statuses_is_one_transaction(sqlite_backend: ResultBackend, hops: list[str], db_path: Path) -> None:
    await sqlite_backend.set_statuses([(f"t{i}", TaskState.QUEUED, {"queue": "q"}) for i in range(10)])
    assert hops == ["set_statuses"]
    assert rows(db_path, "SELECT count(*) FROM statuses WHERE state = 'queued'") == [(10,)]


async def test_the_link_closes_with_the_last_adapter(open_sqlite: SQLiteOpener) -> None:
    broker = await open_sqlite.broker()
    backend = await open_sqlite.backend()
    link = broker._db._link  # type: ignore[attr-defined]
    await broker.close()
    # The backend still works on the shared connection
    await backend.set_status("a", TaskState.QUEUED)
    assert link.conn is not None
    await backend.close()
    assert link.conn is None and not link.roles
    # And a broker opened afterwards gets a fresh link
    again = await open_sqlite.broker()
    assert again._db._link is not link  # type: ignore[attr-defined]
    await again.publish(Envelope(name="t", queue="q"))


async def test_status_writes_share_one_encoding(
    sqlite_backend: ResultBackend, sqlite_broker: Broker, db_path: Path
) -> None:
    # A status written by the backend and one written in a broker transaction read back alike
    await sqlite_backend.set_status("direct", TaskState.QUEUED, meta={"task": "t", "queue": "q", "max_retries": 0})
    sent = Envelope(name="t", queue="q", id="fused")
    await sqlite_broker.enqueue([sent], sqlite_backend)
    direct, fused = await sqlite_backend.get_status("direct"), await sqlite_backend.get_status("fused")
    assert direct is not None and fused is not None
    assert (direct.state, direct.meta, direct.attempt) == (fused.state, fused.meta, fused.attempt)
    columns = rows(db_path, "SELECT task_id, state, queue, task FROM statuses ORDER BY task_id")
    assert columns == [("direct", "queued", "q", "t"), ("fused", "queued", "q", "t")]
