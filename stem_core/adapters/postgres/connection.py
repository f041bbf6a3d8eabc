"""Connections to PostgreSQL: the pools, the schema of a namespace, and the one place
where psycopg errors become ``stem_core.errors``.

One namespace is one schema (``stem_<namespace>``): its tables, indexes, triggers and
NOTIFY channels are separate from every other namespace's, so two environments share a
server without sharing a row, and a namespace is removed with one ``DROP SCHEMA``.

``PostgresConnection`` is what every part of the broker (and the result backend) is
given: two pools of autocommit connections and the open/closed state the parts check
before each statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any, Awaitable, Callable, Iterator

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...errors import BrokerUnavailable, ConfigurationError, StemError, StorageRejected
from .url import PostgresConfig

# A pool checkout waits at most this long for a connection (e.g. while the server restarts).
POOL_TIMEOUT_S = 10.0
# ``connect()`` waits this long for the first connection before reporting the server down.
OPEN_TIMEOUT_S = 10.0
# Schema names are identifiers (63 bytes at most); long namespaces are shortened with a hash.
SCHEMA_PREFIX = "stem_"
SCHEMA_MAX_CHARS = 55
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 4
# The pool grows with the consumers' prefetch (a worker's concurrency x 2) up to this cap.
POOL_MAX_CAP = 32
# NOTIFY channel suffixes: queue wake-ups (broker) and status changes (result backend).
QUEUE_CHANNEL_SUFFIX = "_q"
RESULT_CHANNEL_SUFFIX = "_r"


def schema_name(namespace: str) -> str:
    """The schema of ``namespace``: ``stem_<namespace>``, hashed when too long for an identifier."""
    name = SCHEMA_PREFIX + namespace
    if len(name) <= SCHEMA_MAX_CHARS:
        return name
    digest = hashlib.sha1(namespace.encode()).hexdigest()[:10]
    return f"{name[: SCHEMA_MAX_CHARS - 11]}_{digest}"


def quote_ident(name: str) -> str:
    """A double-quoted identifier; our schema names never contain a quote (checked)."""
    if '"' in name or "\x00" in name:
        raise ConfigurationError(f"invalid identifier {name!r}")
    return f'"{name}"'


# -- errors ---------------------------------------------------------------------------

# SQLSTATE classes 22 (data exception), 23 (integrity constraint), 54 (program limit).
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, OSError)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "the server or the connection is gone" (retry-worthy)."""
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, psycopg.errors.QueryCanceled)


@contextlib.contextmanager
def translate(config: PostgresConfig, unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> Iterator[None]:
    """The one boundary: psycopg and pool exceptions become ``stem_core.errors`` here."""
    try:
        yield
    except StemError:
        raise
    except BaseException as exc:
        if is_unavailable(exc):
            detail = config.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            raise unavailable(f"PostgreSQL at {config.shown_url} is unavailable: {detail}") from None
        if isinstance(exc, psycopg.errors.UndefinedTable):
            raise unavailable(f"Stem's tables are missing at {config.shown_url} (schema dropped?): {config.redact(str(exc))}") from None
        if isinstance(exc, _REFUSED):
            # Retrying cannot cure these: a value too long or out of range, a constraint.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageRejected(f"PostgreSQL at {config.shown_url} refused the data: {config.redact(first)}") from None
        if isinstance(exc, psycopg.Error):
            raise StemError(f"PostgreSQL error at {config.shown_url}: {config.redact(str(exc).strip())}") from None
        raise


# -- pools ----------------------------------------------------------------------------


async def prepare_schema(config: PostgresConfig, migrate: Callable[[psycopg.AsyncConnection], Any],
                         unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> None:
    """One direct connection for the migrations: a down server fails here at once (libpq's
    own error) instead of after the pool's open timeout."""
    with translate(config, unavailable):
        async with await psycopg.AsyncConnection.connect(config.conninfo, autocommit=True) as conn:
            await migrate(conn)


class PostgresDatabase:
    """One pool of autocommit connections plus the retry-once-after-a-broken-connection rule.

    ``settle=True`` pools run with ``synchronous_commit=off``: claims and settlements
    need not wait for the WAL flush, because losing one in a server crash only means the
    message is delivered again (at-least-once), never lost. Publishes use a durable pool.
    """

    def __init__(self, config: PostgresConfig, *, name: str, min_size: int, max_size: int, settle: bool = False,
                 unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> None:
        self.config = config
        self.unavailable = unavailable
        kwargs: dict[str, Any] = {"autocommit": True}
        conninfo = config.conninfo
        if settle:
            params = conninfo_to_dict(conninfo)
            params["options"] = f"{params.get('options', '')} -c synchronous_commit=off".strip()
            conninfo = make_conninfo("", **params)
        self.pool = psycopg_pool.AsyncConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max(min_size, max_size),
            open=False,
            name=name,
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=POOL_TIMEOUT_S * 6,
        )
        self._opened = False

    async def open(self) -> None:
        if self._opened:
            return
        with translate(self.config, self.unavailable):
            try:
                await self.pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
            except BaseException:
                await self.pool.close()
                raise
        self._opened = True

    async def close(self) -> None:
        self._opened = False
        await self.pool.close()

    async def grow(self, wanted: int) -> None:
        """Make room for ``wanted`` concurrent connections (capped)."""
        size = min(POOL_MAX_CAP, max(wanted, self.pool.max_size))
        if size > self.pool.max_size:
            await self.pool.resize(self.pool.min_size, size)

    async def run(self, fn: Callable[[psycopg.AsyncConnection], Any]) -> Any:
        """``await fn(conn)`` on a pooled connection; after a broken connection (a server
        restart leaves every pooled connection dead) check the pool and try once more."""
        with translate(self.config, self.unavailable):
            try:
                async with self.pool.connection() as conn:
                    return await fn(conn)
            except BaseException as exc:
                if not is_unavailable(exc) or isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)):
                    raise
            await self.pool.check()
            async with self.pool.connection() as conn:
                return await fn(conn)

    async def fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async def go(conn: psycopg.AsyncConnection) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description is not None else []

        return await self.run(go)

    async def execute(self, query: str, params: Any = None) -> int:
        async def go(conn: psycopg.AsyncConnection) -> int:
            cur = await conn.execute(query, params)
            return cur.rowcount

        return await self.run(go)


class PostgresConnection:
    """An adapter's two pools of one size and its open/closed state.

    ``durable()`` is the pool whose commits wait for the WAL flush (publishes, operator
    repairs), opened by ``open`` after the migrations; ``fast()`` is the
    ``synchronous_commit=off`` pool (see ``PostgresDatabase``), opened on first use.
    Both raise ``unavailable`` once the owner started closing, so a waiter woken by
    ``close`` finds the adapter closed instead of a half-closed pool."""

    def __init__(self, config: PostgresConfig, schema: str, *, name: str, pool_size: int | None, label: str,
                 unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> None:
        self.config = config
        self.schema = schema
        self.unavailable = unavailable
        self.durable_pool: PostgresDatabase | None = None
        self.fast_pool: PostgresDatabase | None = None
        self._name = name
        self._max_size = pool_size or DEFAULT_POOL_MAX
        self._label = label
        self._closed = False
        self._fast_lock = asyncio.Lock()

    def _database(self, name: str, *, settle: bool) -> PostgresDatabase:
        return PostgresDatabase(self.config, name=name, min_size=DEFAULT_POOL_MIN, max_size=self._max_size,
                                settle=settle, unavailable=self.unavailable)

    async def open(self, migrate: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> bool:
        """Migrate the schema on a direct connection, then open the durable pool; True when
        this call opened it, False when it was open already."""
        if self.durable_pool is not None:
            return False
        await prepare_schema(self.config, migrate, self.unavailable)
        db = self._database(self._name, settle=False)
        await db.open()
        self.durable_pool = db
        self._closed = False
        return True

    @property
    def is_open(self) -> bool:
        return not self._closed and self.durable_pool is not None

    def durable(self) -> PostgresDatabase:
        """The durable pool; raises ``unavailable`` when the adapter is closed (or closing)."""
        db = self.durable_pool
        if self._closed or db is None:
            raise self.unavailable(f"the PostgreSQL {self._label} for {self.config.shown_url} is closed")
        return db

    async def fast(self) -> PostgresDatabase:
        """The ``synchronous_commit=off`` pool, opened on first use (raises like ``durable``)."""
        self.durable()
        if self.fast_pool is None:
            async with self._fast_lock:
                if self.fast_pool is None:
                    db = self._database(f"{self._name}-fast", settle=True)
                    await db.open()
                    self.fast_pool = db
        return self.fast_pool

    def mark_closed(self) -> None:
        """Refuse work from now on: the owner's ``close`` first wakes its waiters, which must
        find it closed, and only then calls ``close`` to release the pools."""
        self._closed = True

    async def close(self) -> None:
        self._closed = True
        durable, fast, self.durable_pool, self.fast_pool = self.durable_pool, self.fast_pool, None, None
        for db in (fast, durable):
            if db is not None:
                await db.close()


__all__ = [
    "PostgresConnection",
    "PostgresDatabase",
    "QUEUE_CHANNEL_SUFFIX",
    "RESULT_CHANNEL_SUFFIX",
    "is_unavailable",
    "quote_ident",
    "schema_name",
    "translate",
]
