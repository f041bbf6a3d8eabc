"""``SQLiteDatabase``: one SQLite database file - its connections, the thread they live on,
and error translation. The SQLite adapter's connection (``connection.py`` in the recipe).

Every statement runs on the dedicated thread of the file's ``Link`` (``thread.py``), and
every transaction is *one* hop to it: ``await db.run(fn, ...)`` calls ``fn(conn, ...)``
there, and ``fn`` wraps its writes in ``with immediate(conn):`` (``BEGIN IMMEDIATE`` ...
``COMMIT``). IMMEDIATE takes the write lock up front, so the busy handler waits for it
instead of failing with SQLITE_BUSY_SNAPSHOT halfway through a read-then-write.

A broker and its result backend share a link: a broker and a result backend open on the
same file in this process pair up on one connection and thread (``link_for``). They never
wait on each other's write lock (SQLite's busy handler sleeps whole milliseconds at a
time), and one transaction can write for both (``Broker.enqueue``,
``Broker.ack_with_status``). More adapters on the file get links of their own: one thread
serving every app of a process would queue, say, one worker's lease renewals behind all
the others' writes.

Group commit: when several calls are already queued for the thread (concurrent acks,
publishes, claims and status writes), they run in one ``BEGIN IMMEDIATE`` ... ``COMMIT``,
each inside its own SAVEPOINT (so one call's failure undoes only its own writes), and
nobody's result is handed back before that COMMIT. One commit writes each touched page
once instead of once per call; a lone call runs exactly as before.

Reads an operator makes (``SQLiteDatabase.read``: counters, pages of messages, heartbeats,
statuses, records) run on a third connection, read-only (``query_only``), on a thread of
their own, started at the first read. A read in WAL mode never waits for the write lock,
but on the writer thread it would queue behind calls that do: a process stopped (or hung)
while it holds the lock would freeze every view for the busy timeout, when the operator
most needs them.

A read-only connection answers ``PRAGMA data_version`` on the event loop itself
(about 3 microseconds, no hop): the value changes whenever another connection - in this
process or another one - commits, which is how idle consumers notice new work cheaply.

Closing waits at most ``CLOSE_WAIT_S`` for the calls already queued: a write that waits
for a lock another process holds can take the whole busy timeout, and ``stem inspect``
would sit on its printed answer that long. The thread then finishes those calls (the
write goes in once the lock is free, or fails as it would have) and closes the
connection itself.

Connections never cross ``fork``: a child that uses an inherited ``SQLiteDatabase``
abandons the parent's link (without closing its connections, which could disturb the
parent's locks) and opens its own. ``sqlite3`` exceptions are translated here and nowhere
else, as the error type of the adapter that made the call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ..._aio import retrieve
from ...errors import BrokerUnavailable, ConfigurationError, StemError, StorageRejected
from .bell import doorbell_for
from .poller import ChangePoller
from .schema import migrate
from .thread import DatabaseThread
from .url import POLL_INTERVAL_S

T = TypeVar("T")
log = logging.getLogger("stem.sqlite")

# How long closing waits for the calls already queued on the writer thread (see above).
CLOSE_WAIT_S = 2.0

# ms-rounded POSIX seconds on the database's clock (all leases and expiries use it).
NOW_SQL = "SELECT round((julianday('now') - 2440587.5) * 86400.0, 3)"
# The version probe must never block the event loop: it gives up at once when busy.
WATCH_BUSY_TIMEOUT_MS = 0
# Switching a fresh file to WAL needs a moment alone with it; retry this long, this often.
WAL_SWITCH_DEADLINE_S = 10.0
WAL_SWITCH_RETRY_S = 0.01
STATEMENT_CACHE_SIZE = 256
# The database file (and so its -wal/-shm) is created readable by its owner only; a
# folder Stem creates for it likewise (SPEC 9: other users of an ops box must not read
# the payloads).
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

# Links inherited over fork: kept referenced (never closed or collected) in the child.
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
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)) or "too big" in low:
        # Retrying cannot cure these: a constraint, a value too large.
        return StorageRejected(f"sqlite database {path} refused the data: {text}")
    return unavailable(f"sqlite error on {path}: {text}")


class Link:
    """The two connections to one file and the thread they live on, shared by a broker
    and a result backend of this process on that file with the same busy timeout
    (``link_for``; see "A broker and its result backend share a link" in the module
    docstring)."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.conn: sqlite3.Connection | None = None
        self.watch: sqlite3.Connection | None = None
        self.thread = DatabaseThread(f"stem-sqlite-{path.name}", self._group)
        # The read-only connection and its thread, started by the first read (read_thread).
        self.reader: sqlite3.Connection | None = None
        self._reader_thread: DatabaseThread | None = None
        self._reader_lock = threading.Lock()
        self._released = False
        # The kinds of adapter using it, at most one of each (see link_for).
        self.roles: set[str] = set()

    def open_sync(self, owner: "SQLiteDatabase") -> None:
        """Create the file (and its folder), set the pragmas and migrate; on the thread.
        Idempotent: the second adapter to open finds the connections there."""
        if self.conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
            create_private(self.path)
            conn = self._connect(self.busy_timeout_s)
            try:
                _use_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                # A group commit's SAVEPOINTs give SQLite a statement journal each, and
                # on disk every one is a new file in /var/tmp (open, write, unlink: ~0.7
                # a task in a drain, 11 % of its time). In memory it holds the original
                # pages a savepoint changes: a few pages for the worker's calls; sweeps of
                # expired rows are bounded batches (store.cleanup), and the big
                # one-statement deletes (purge) run alone, without a savepoint.
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA foreign_keys=ON")
                migrate(conn)
                watch = self._connect(WATCH_BUSY_TIMEOUT_MS / 1000)
                watch.execute("PRAGMA query_only=ON")
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise owner.translate(exc) from None
        self.conn, self.watch = conn, watch

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

    def close_sync(self) -> None:
        conns, self.conn, self.watch = (self.conn, self.watch), None, None
        _close_all(conns)

    def read_thread(self) -> DatabaseThread | None:
        """The reader's thread, started now if this is the first read; None once the link
        is being released."""
        with self._reader_lock:
            if self._reader_thread is None and not self._released:
                self._reader_thread = DatabaseThread(f"stem-sqlite-read-{self.path.name}", self._read)
            return self._reader_thread

    def detach_reader(self) -> DatabaseThread | None:
        """No more reads: the reader's thread, if one was started (the caller queues
        ``close_reader`` on it, then stops it)."""
        with self._reader_lock:
            self._released = True
            thread, self._reader_thread = self._reader_thread, None
        return thread

    def close_reader(self) -> None:
        reader, self.reader = self.reader, None
        _close_all((reader,))

    def _read(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...], SQLiteDatabase]]) -> list[tuple[bool, Any]]:
        """Run each read alone on the read-only connection (on the reader's thread),
        opening it first if needed; errors are translated for the adapter that asked."""
        if self.conn is None:
            return self._closed(calls)
        if self.reader is None:
            try:
                reader = self._connect(self.busy_timeout_s)
                reader.execute("PRAGMA query_only=ON")
            except sqlite3.Error as exc:
                return [(False, owner.translate(exc)) for _, _, owner in calls]
            self.reader = reader
        return [_one(self.reader, fn, args, owner) for fn, args, owner in calls]

    def _closed(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...], SQLiteDatabase]]) -> list[tuple[bool, Any]]:
        return [(False, owner.unavailable(f"sqlite {owner.label} on {self.path} is closed")) for _, _, owner in calls]

    def _group(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...], SQLiteDatabase]]) -> list[tuple[bool, Any]]:
        """Run ``fn(conn, *args)`` for each call (on the database thread); several calls
        share one transaction, each in its own SAVEPOINT. Errors are translated for the
        adapter that made the call."""
        conn = self.conn
        if conn is None:
            return self._closed(calls)
        if conn.in_transaction:
            # Never expected; but a leaked transaction would silently swallow every later
            # call's writes into savepoints that are never committed.
            conn.execute("ROLLBACK")
        if len(calls) == 1:
            return [_one(conn, *calls[0])]
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, owner.translate(exc)) for _, _, owner in calls]
        outcomes: list[tuple[bool, Any]] = []
        for index, (fn, args, owner) in enumerate(calls):
            outcome = _one(conn, fn, args, owner, savepoint=True)
            if not conn.in_transaction:
                # The error ended the shared transaction: whatever ran in it is undone.
                failed = outcome[1] if not outcome[0] else owner.unavailable(f"sqlite transaction on {self.path} was lost")
                outcomes = [(False, failed) for _ in range(index + 1)]
                return outcomes + [_one(conn, *call) for call in calls[index + 1 :]]
            outcomes.append(outcome)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(False, owner.translate(exc)) for _, _, owner in calls]
        return outcomes


def _one(conn: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...], owner: "SQLiteDatabase", *,
         savepoint: bool = False) -> tuple[bool, Any]:
    try:
        if not savepoint:
            return True, fn(conn, *args)
        with _savepoint(conn, "stem_call"):
            return True, fn(conn, *args)
    except sqlite3.Error as exc:
        return False, owner.translate(exc)
    except BaseException as exc:  # handed to the awaiting coroutine
        return False, exc


def _close_all(conns: tuple[sqlite3.Connection | None, ...]) -> None:
    for conn in conns:
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass


def create_private(path: Path) -> None:
    """Create ``path`` empty and readable by its owner only (``PRIVATE_FILE_MODE``) unless
    it exists: the database holds every payload, and SQLite gives its ``-wal`` and
    ``-shm`` files the database file's permissions. An existing file keeps its mode (the
    operator may have shared it on purpose)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


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


_links_lock = threading.Lock()
_links: dict[tuple[str, float], list[Link]] = {}


def link_for(path: Path, busy_timeout_s: float, role: str) -> Link:
    """A link to ``path`` for one adapter of kind ``role`` ("broker", "result backend"):
    one that has no ``role`` yet, else a new one. So each broker pairs up with one result
    backend (an app's two adapters, opened one after the other), and no more adapters
    than a pair queue their calls on one thread (``unlink`` gives the role back)."""
    key = (str(path), busy_timeout_s)
    with _links_lock:
        links = _links.setdefault(key, [])
        for link in links:
            if role not in link.roles:
                break
        else:
            link = Link(path, busy_timeout_s)
            links.append(link)
        link.roles.add(role)
        return link


def unlink(link: Link, role: str) -> bool:
    """Give ``role`` back; True when the link is now unused (the caller then closes it)."""
    with _links_lock:
        link.roles.discard(role)
        if link.roles:
            return False
        links = _links.get((str(link.path), link.busy_timeout_s), [])
        if link in links:
            links.remove(link)
        return True


def _reset_after_fork() -> None:
    # The parent's links are the parent's (their threads do not even exist here): a
    # child opens its own. A lock held by another thread at fork time would stay held.
    global _links_lock
    _links_lock = threading.Lock()
    _abandoned.extend(_links.values())
    _links.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class SQLiteDatabase:
    """One adapter instance's handle on a database file: its error type and label, its
    open/closed state, the file's doorbell (``bell``: ring it after a commit a waiter may
    want) and the adapter's ``poller`` (wait on it for commits by anyone). Connections
    and thread are the process's ``Link`` to the file, shared with the other adapters
    open on it."""

    def __init__(self, path: Path, *, busy_timeout_s: float, unavailable: type[BrokerUnavailable], label: str,
                 poll_interval: float = POLL_INTERVAL_S) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.unavailable = unavailable
        self.label = label
        self.bell = doorbell_for(str(path))
        self.poller = ChangePoller(self, self.bell, poll_interval)
        self._link: Link | None = None
        self._pid = os.getpid()
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file (and its folder), set the pragmas and migrate. Idempotent."""
        self._closed = False
        self._forget_if_forked()
        if self._link is None:
            self._link = link_for(self.path, self.busy_timeout_s, self.label)
        link = self._link
        if link.conn is not None:
            return
        try:
            await link.thread.submit(asyncio.get_running_loop(), link.open_sync, self)
        except BaseException:
            if self._link is link:
                self._link = None
                await _release(link, self.label)
            raise

    async def close(self) -> None:
        """Let go of the link (its connections close with the last adapter using them)
        and stop the poller; waiters wake (the doorbell rings), find it closed and raise.
        Idempotent."""
        self._closed = True
        self._forget_if_forked()
        link, self._link = self._link, None
        if link is not None:
            await _release(link, self.label)
        self.poller.stop()
        self.bell.ring()

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise the adapter's unavailable error once it was closed."""
        if self._closed:
            raise self.unavailable(f"sqlite {self.label} on {self.path} is closed")

    def shares_link(self, other: "SQLiteDatabase") -> bool:
        """Both open on one link (one connection, one thread): one transaction can write
        for both adapters."""
        link = self._link
        return link is not None and link is other._link and not self._closed and not other._closed

    def _forget_if_forked(self) -> None:
        if os.getpid() == self._pid:
            return
        self._link = None  # the parent's; _reset_after_fork keeps it referenced
        self._pid = os.getpid()

    # -- running work ---------------------------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """Start ``fn(conn, *args)`` on the database thread; the future carries its result
        or a translated Stem error. Use ``run`` unless you need the future itself."""
        loop = asyncio.get_running_loop()
        self.check_open()
        link = self._link
        if link is None or os.getpid() != self._pid:
            return loop.create_task(self._reopen_then(fn, args))  # type: ignore[return-value]
        return link.thread.submit(loop, fn, *args, grouped=True, owner=self)

    async def _reopen_then(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        await self.open()
        assert self._link is not None
        return await self._link.thread.submit(asyncio.get_running_loop(), fn, *args, grouped=True, owner=self)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the database thread: one hop, one transaction."""
        return await self.submit(fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the reader's thread and read-only connection: it never
        queues behind a write (see the module docstring). ``fn`` must not write (the
        connection refuses); several statements that must agree go in ``snapshot``."""
        self.check_open()
        if self._link is None or os.getpid() != self._pid:
            await self.open()
        thread = self._link.read_thread() if self._link is not None else None
        if thread is None:
            raise self.unavailable(f"sqlite {self.label} on {self.path} is closed")
        return await thread.submit(asyncio.get_running_loop(), fn, *args, grouped=True, owner=self)

    def translate(self, exc: BaseException) -> StemError:
        """This adapter's Stem error for a driver (or file system) error."""
        return translate(exc, self.path, self.unavailable, self.busy_timeout_s)

    def data_version(self) -> int | None:
        """``PRAGMA data_version`` on the loop thread; None when it cannot be read right now
        (callers then assume something changed)."""
        link = self._link
        watch = link.watch if link is not None else None
        if watch is None or os.getpid() != self._pid:
            return None
        try:
            return int(watch.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None


async def _release(link: Link, role: str) -> None:
    if unlink(link, role):
        reader = link.detach_reader()
        if reader is not None:
            await reader.submit(asyncio.get_running_loop(), link.close_reader)
            reader.stop()
        closing = link.thread.submit(asyncio.get_running_loop(), link.close_sync)
        link.thread.stop()
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await asyncio.shield(closing)
        except TimeoutError:
            closing.add_done_callback(retrieve)
            log.warning("sqlite %s on %s: a write still waits for the database lock (held by another process?); "
                        "closed without waiting for it (it goes in once the lock is free)", role, link.path)


__all__ = ["Link", "NOW_SQL", "SQLiteDatabase", "db_now", "immediate", "link_for", "snapshot", "translate"]
