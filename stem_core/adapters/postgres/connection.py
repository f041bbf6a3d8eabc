"""Connections to PostgreSQL: URL parsing, pools, the schema of a namespace, and the one
place where psycopg errors become ``stem_core.errors``.

One namespace is one schema (``stem_<namespace>``): its tables, indexes, triggers and
NOTIFY channels are separate from every other namespace's, so two environments share a
server without sharing a row, and a namespace is removed with one ``DROP SCHEMA``.

URL query parameters that are not Stem options go to libpq unchanged (``sslmode``,
``sslrootcert``, ``application_name``, ``connect_timeout``, ``options`` ...); libpq
rejects unknown ones, and we turn that into a ``ConfigurationError``. Passwords never
appear in a message: every text we raise goes through ``redact``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...errors import BackendUnavailable, BrokerUnavailable, ConfigurationError, StemError
from ...settings import redact_url

# libpq gives up on an unreachable server after this long (per attempt).
CONNECT_TIMEOUT_S = 5
# A pool checkout waits at most this long for a connection (e.g. while the server restarts).
POOL_TIMEOUT_S = 10.0
# ``connect()`` waits this long for the first connection before reporting the server down.
OPEN_TIMEOUT_S = 10.0
# Safety net: the server ends any of our sessions left idle inside a transaction this long.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
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


@dataclass(frozen=True)
class PgConfig:
    """What ``from_url`` parsed: the libpq conninfo, Stem options and the redacted URL."""

    conninfo: str
    shown_url: str
    password: str | None
    options: dict[str, Any] = field(default_factory=dict)

    def redact(self, text: str) -> str:
        """``text`` with the password (if any) replaced by ``***``."""
        if self.password:
            text = text.replace(self.password, "***")
        return text


def parse_url(url: str, options: dict[str, Any], known: dict[str, Callable[[Any], Any]]) -> PgConfig:
    """Split ``url`` into libpq conninfo and the Stem options named in ``known``.

    ``known`` maps option name -> converter (raising ``ValueError`` on bad input); keyword
    ``options`` win over query parameters; anything else in ``options`` is an error.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {shown!r}: {exc}") from None
    stem_opts: dict[str, Any] = {}
    libpq_query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in known:
            stem_opts[key] = value
        else:
            libpq_query.append((key, value))
    for key, value in options.items():
        if key not in known:
            raise ConfigurationError(
                f"unknown PostgreSQL option {key!r}; known: {', '.join(sorted(known))} (libpq parameters go in the URL query)"
            )
        stem_opts[key] = value
    parsed: dict[str, Any] = {}
    for key, value in stem_opts.items():
        try:
            parsed[key] = known[key](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"PostgreSQL option {key}={value!r} is invalid: {exc}") from None
    scheme = "postgresql" if parts.scheme.lower() in ("postgres", "postgresql") else parts.scheme
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(libpq_query), ""))
    try:
        params = conninfo_to_dict(clean)
    except psycopg.Error as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {shown!r}: {_redact_text(str(exc), parts.password)}") from None
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "stem")
    # Our own session settings travel in the startup packet: UTC timestamps in JSON we
    # build server-side, and a server-side guard against a leaked open transaction.
    extra = f"-c TimeZone=UTC -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    params["options"] = f"{params['options']} {extra}" if params.get("options") else extra
    conninfo = make_conninfo("", **params)
    return PgConfig(conninfo=conninfo, shown_url=shown, password=parts.password, options=parsed)


# What makes two conninfos the same database as the same role: a broker and a result
# backend agreeing on these can write to each other's tables in one statement.
_DATABASE_KEYS = ("host", "hostaddr", "port", "dbname", "user", "service")


def same_database(a: PgConfig, b: PgConfig) -> bool:
    """True when ``a`` and ``b`` reach the same database as the same user (other libpq
    parameters, such as ``application_name`` or ``sslmode``, may differ)."""
    if a.conninfo == b.conninfo:
        return True
    da, db = conninfo_to_dict(a.conninfo), conninfo_to_dict(b.conninfo)
    return all(da.get(key) == db.get(key) for key in _DATABASE_KEYS)


def _redact_text(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be positive")
    return number


def positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


# -- errors ---------------------------------------------------------------------------

_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, OSError)


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean "the server or the connection is gone" (retry-worthy)."""
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, psycopg.errors.QueryCanceled)


@contextlib.contextmanager
def translate(config: PgConfig, unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> Iterator[None]:
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
        if isinstance(exc, psycopg.Error):
            raise StemError(f"PostgreSQL error at {config.shown_url}: {config.redact(str(exc).strip())}") from None
        raise


# -- pools ----------------------------------------------------------------------------


async def prepare_schema(config: PgConfig, migrate: Callable[[psycopg.AsyncConnection], Any],
                         unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> None:
    """One direct connection for the migrations: a down server fails here at once (libpq's
    own error) instead of after the pool's open timeout."""
    with translate(config, unavailable):
        async with await psycopg.AsyncConnection.connect(config.conninfo, autocommit=True) as conn:
            await migrate(conn)


class Database:
    """One pool of autocommit connections plus the retry-once-after-a-broken-connection rule.

    ``settle=True`` pools run with ``synchronous_commit=off``: claims and settlements
    need not wait for the WAL flush, because losing one in a server crash only means the
    message is delivered again (at-least-once), never lost. Publishes use a durable pool.
    """

    def __init__(self, config: PgConfig, *, name: str, min_size: int, max_size: int, settle: bool = False,
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

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        with translate(self.config, self.unavailable):
            async with self.pool.connection() as conn:
                yield conn

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


class Pools:
    """An adapter's two pools of one size: ``main`` (durable commits), opened by ``open``
    after the migrations, and ``fast`` (``synchronous_commit=off``, see ``Database``),
    opened on first use; ``main`` is None until opened and after ``close``."""

    def __init__(self, config: PgConfig, *, name: str, pool_size: int | None,
                 unavailable: type[BrokerUnavailable] = BrokerUnavailable) -> None:
        self.config = config
        self.name = name
        self.max_size = pool_size or DEFAULT_POOL_MAX
        self.unavailable = unavailable
        self.main: Database | None = None
        self.fast_db: Database | None = None
        self._fast_lock = asyncio.Lock()

    def _database(self, name: str, *, settle: bool) -> Database:
        return Database(self.config, name=name, min_size=DEFAULT_POOL_MIN, max_size=self.max_size, settle=settle,
                        unavailable=self.unavailable)

    async def open(self, migrate: Callable[[psycopg.AsyncConnection], Any]) -> None:
        """Migrate the schema on a direct connection, then open ``main`` (idempotent)."""
        if self.main is not None:
            return
        await prepare_schema(self.config, migrate, self.unavailable)
        db = self._database(self.name, settle=False)
        await db.open()
        self.main = db

    async def fast(self) -> Database:
        """The ``synchronous_commit=off`` pool, opened on first use."""
        if self.fast_db is None:
            async with self._fast_lock:
                if self.fast_db is None:
                    db = self._database(f"{self.name}-fast", settle=True)
                    await db.open()
                    self.fast_db = db
        return self.fast_db

    async def close(self) -> None:
        main, fast, self.main, self.fast_db = self.main, self.fast_db, None, None
        for db in (fast, main):
            if db is not None:
                await db.close()


__all__ = [
    "BackendUnavailable",
    "Database",
    "Pools",
    "PgConfig",
    "parse_url",
    "positive_float",
    "positive_int",
    "quote_ident",
    "same_database",
    "schema_name",
    "translate",
]
