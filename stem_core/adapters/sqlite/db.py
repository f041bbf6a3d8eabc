"""One SQLite database file: its connections, the thread they live on, and error translation.

Every statement runs on one dedicated thread per ``Database`` (``DatabaseThread``), and
every transaction is *one* hop to it: ``await db.run(fn, ...)`` calls ``fn(conn, ...)``
there, and ``fn`` wraps its writes in ``with immediate(conn):`` (``BEGIN IMMEDIATE`` ...
``COMMIT``). IMMEDIATE takes the write lock up front, so the busy handler waits for it
instead of failing with SQLITE_BUSY_SNAPSHOT halfway through a read-then-write.

Group commit: when several calls are already queued for the thread (concurrent acks,
publishes and claims), they run in one ``BEGIN IMMEDIATE`` ... ``COMMIT``, each inside its
own SAVEPOINT (so one call's failure undoes only its own writes), and nobody's result is
handed back before that COMMIT. One commit writes each touched page once instead of once
per call; a lone call runs exactly as before.

A second, read-only connection answers ``PRAGMA data_version`` on the event loop itself
(about 3 microseconds, no hop): the value changes whenever another connection - in this
process or another one - commits, which is how idle consumers notice new work cheaply.

Connections never cross ``fork``: a child that uses an inherited ``Database`` abandons the
parent's connections (without closing them, which could disturb the parent's locks) and
opens its own. ``sqlite3`` exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ...errors import BrokerUnavailable, ConfigurationError, StemError
from .bell import doorbell_for
from .poller import ChangePoller
from .schema import migrate
from .url import POLL_INTERVAL_S

T = TypeVar("T")

# ms-rounded POSIX seconds on the database's clock (all leases and expiries use it).
NOW_SQL = "SELECT round((julianday('now') - 2440587.5) * 86400.0, 3)"
# The version probe must never block the event loop: it gives up at once when busy.
WATCH_BUSY_TIMEOUT_MS = 0
# Switching a fresh file to WAL needs a moment alone with it; retry this long, this often.
WAL_SWITCH_DEADLINE_S = 10.0
WAL_SWITCH_RETRY_S = 0.01
STATEMENT_CACHE_SIZE = 256
# At most this many queued calls share one group commit (bounds how long it holds the lock).
GROUP_MAX_CALLS = 64

# Connections inherited over fork: kept referenced (never closed or collected) in the child.
_abandoned: list[Any] = []


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception. Inside a group
    commit (a transaction is already open) it is a SAVEPOINT instead."""
    if conn.in_transaction:
        with _savepoint(conn, "stem_tx"):
            yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: several SELECTs that see one consistent state (inside a
    group commit the open transaction already is one)."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


@contextmanager
def _savepoint(conn: sqlite3.Connection, name: str) -> Iterator[None]:
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        # Some errors (SQLITE_FULL, IOERR, BUSY) end the whole transaction by themselves.
        if conn.in_transaction:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")


def db_now(conn: sqlite3.Connection) -> float:
    """The database's current time as POSIX seconds (millisecond resolution)."""
    return float(conn.execute(NOW_SQL).fetchone()[0])


def translate(exc: BaseException, path: Path, unavailable: type[BrokerUnavailable], busy_s: float) -> StemError:
    """The Stem error for a driver (or file system) error on ``path``."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, OSError):
        return ConfigurationError(f"cannot create sqlite database {path}: {exc.strerror or text}")
    if "locked" in low or "busy" in low:
        return unavailable(f"sqlite database {path} stayed locked by another writer for more than {busy_s:g}s")
    if "unable to open" in low or "readonly" in low or "read-only" in low or "permission" in low:
        return ConfigurationError(f"cannot open sqlite database {path} for writing: {text}")
    if "not a database" in low or "malformed" in low or "encrypted" in low:
        return ConfigurationError(f"{path} is not a usable sqlite database: {text}")
    return unavailable(f"sqlite error on {path}: {text}")


class DatabaseThread:
    """One daemon thread running submitted calls in order; results come back to the
    caller's event loop with ``call_soon_threadsafe``. Half the cost of a
    ``ThreadPoolExecutor`` hop (measured: 43 vs 89 us), which matters at one hop per
    transaction. A daemon, so a broker nobody closed cannot hold the interpreter open
    (an interrupted transaction is simply rolled back by SQLite).

    Calls submitted as ``grouped`` that are waiting together are handed to ``group`` as
    one list (see "Group commit" in the module docstring)."""

    def __init__(self, name: str, group: Callable[[list[tuple[Callable[..., Any], tuple[Any, ...]]]], list[tuple[bool, Any]]]) -> None:
        self._group = group
        self._jobs: "queue.SimpleQueue[tuple[Any, ...] | None]" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any, grouped: bool = False) -> "asyncio.Future[T]":
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, fut, fn, args, grouped))
        return fut

    def stop(self) -> None:
        """Finish what was submitted, then exit."""
        self._jobs.put(None)

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < GROUP_MAX_CALLS:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            try:
                for jobs, outcomes in self._run(batch):
                    _deliver(jobs, outcomes)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                _deliver(batch, [(False, exc)] * len(batch))

    def _run(self, batch: list[tuple[Any, ...]]) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[bool, Any]]]]:
        """Runs of consecutive grouped calls go to ``group``; other calls run alone."""
        run: list[tuple[Any, ...]] = []
        for job in batch + [None]:
            if job is not None and job[4]:
                run.append(job)
                continue
            if run:
                yield run, self._group([(fn, args) for _, _, fn, args, _ in run])
                run = []
            if job is not None:
                yield [job], [_outcome(job[2], job[3])]


def _deliver(jobs: list[tuple[Any, ...]], outcomes: list[tuple[bool, Any]]) -> None:
    for (loop, fut, *_), outcome in zip(jobs, outcomes):
        try:
            loop.call_soon_threadsafe(_settle, fut, outcome)
        except RuntimeError:
            pass  # that loop is closed: nobody is waiting any more


def _settle(fut: "asyncio.Future[Any]", outcome: tuple[bool, Any]) -> None:
    if fut.done():
        return
    ok, value = outcome
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except BaseException as exc:  # handed to the awaiting coroutine
        return False, exc


class Database:
    """The connections to one database file, owned by one adapter instance, with the
    file's doorbell (``bell``: ring it after a commit a waiter may want) and the
    adapter's ``poller`` (wait on it for commits by anyone)."""

    def __init__(self, path: Path, *, busy_timeout_s: float, unavailable: type[BrokerUnavailable], label: str,
                 poll_interval: float = POLL_INTERVAL_S) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.unavailable = unavailable
        self.label = label
        self.bell = doorbell_for(str(path))
        self.poller = ChangePoller(self, self.bell, poll_interval)
        self._conn: sqlite3.Connection | None = None
        self._watch: sqlite3.Connection | None = None
        self._thread: DatabaseThread | None = None
        self._pid = os.getpid()
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file (and its folder), set the pragmas and migrate. Idempotent."""
        self._closed = False
        self._forget_if_forked()
        if self._conn is not None:
            return
        if self._thread is None:
            self._thread = DatabaseThread(f"stem-sqlite-{self.label}", self._group)
        await self._thread.submit(asyncio.get_running_loop(), self._open_sync)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(self.busy_timeout_s)
            try:
                self._use_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                migrate(conn)
                watch = self._connect(WATCH_BUSY_TIMEOUT_MS / 1000)
                watch.execute("PRAGMA query_only=ON")
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise translate(exc, self.path, self.unavailable, self.busy_timeout_s) from None
        self._conn, self._watch = conn, watch

    def _connect(self, timeout_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            timeout=timeout_s,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=STATEMENT_CACHE_SIZE,
        )
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        return conn

    @staticmethod
    def _use_wal(conn: sqlite3.Connection) -> None:
        """WAL is persistent: set it once, when the file is new. Several processes opening a
        fresh file at once race for it, and the losers see "database is locked" (without
        the busy handler), so they retry until someone has switched it."""
        deadline = time.monotonic() + WAL_SWITCH_DEADLINE_S
        while True:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(WAL_SWITCH_RETRY_S)

    async def close(self) -> None:
        """Close both connections on their thread and stop the poller; waiters wake (the
        doorbell rings), find it closed and raise. Idempotent."""
        self._closed = True
        self._forget_if_forked()
        conn, watch, thread = self._conn, self._watch, self._thread
        self._conn = self._watch = None
        self._thread = None
        if thread is not None:
            if conn is not None:
                await thread.submit(asyncio.get_running_loop(), _close_all, conn, watch)
            thread.stop()
        self.poller.stop()
        self.bell.ring()

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise the adapter's unavailable error once it was closed."""
        if self._closed:
            raise self.unavailable(f"sqlite {self.label} on {self.path} is closed")

    def _forget_if_forked(self) -> None:
        if os.getpid() == self._pid:
            return
        _abandoned.extend(x for x in (self._conn, self._watch, self._thread) if x is not None)
        self._conn = self._watch = None
        self._thread = None
        self._pid = os.getpid()

    # -- running work ---------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """Start ``fn(conn, *args)`` on the database thread; the future carries its result
        or a translated Stem error. Use ``run`` unless you need the future itself."""
        loop = asyncio.get_running_loop()
        self.check_open()
        if self._thread is None or os.getpid() != self._pid:
            return loop.create_task(self._reopen_then(fn, args))  # type: ignore[return-value]
        return self._thread.submit(loop, fn, *args, grouped=True)

    async def _reopen_then(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        await self.open()
        assert self._thread is not None
        return await self._thread.submit(asyncio.get_running_loop(), fn, *args, grouped=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the database thread: one hop, one transaction."""
        return await self.submit(fn, *args)

    def _group(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[tuple[bool, Any]]:
        """Run ``fn(conn, *args)`` for each call (on the database thread); several calls
        share one transaction, each in its own SAVEPOINT."""
        conn = self._conn
        if conn is None:
            return [(False, self.unavailable(f"sqlite {self.label} on {self.path} is closed")) for _ in calls]
        if conn.in_transaction:
            # Never expected; but a leaked transaction would silently swallow every later
            # call's writes into savepoints that are never committed.
            conn.execute("ROLLBACK")
        if len(calls) == 1:
            return [self._one(conn, *calls[0])]
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, self._translate(exc)) for _ in calls]
        outcomes: list[tuple[bool, Any]] = []
        for index, (fn, args) in enumerate(calls):
            outcome = self._one(conn, fn, args, savepoint=True)
            if not conn.in_transaction:
                # The error ended the shared transaction: whatever ran in it is undone.
                failed = outcome[1] if not outcome[0] else self.unavailable(f"sqlite transaction on {self.path} was lost")
                outcomes = [(False, failed) for _ in range(index + 1)]
                return outcomes + [self._one(conn, fn2, args2) for fn2, args2 in calls[index + 1 :]]
            outcomes.append(outcome)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(False, self._translate(exc)) for _ in calls]
        return outcomes

    def _one(self, conn: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...], *, savepoint: bool = False) -> tuple[bool, Any]:
        try:
            if not savepoint:
                return True, fn(conn, *args)
            with _savepoint(conn, "stem_call"):
                return True, fn(conn, *args)
        except sqlite3.Error as exc:
            return False, self._translate(exc)
        except BaseException as exc:  # handed to the awaiting coroutine
            return False, exc

    def _translate(self, exc: BaseException) -> StemError:
        return translate(exc, self.path, self.unavailable, self.busy_timeout_s)

    def data_version(self) -> int | None:
        """``PRAGMA data_version`` on the loop thread; None when it cannot be read right now
        (callers then assume something changed)."""
        watch = self._watch
        if watch is None or os.getpid() != self._pid:
            return None
        try:
            return int(watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None


def _close_all(*conns: sqlite3.Connection | None) -> None:
    for conn in conns:
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass


__all__ = ["Database", "NOW_SQL", "db_now", "immediate", "snapshot", "translate"]
