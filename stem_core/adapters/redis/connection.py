"""Connections to Redis: URL parsing, the client and its pool, the Lua scripts, and the
one place where redis-py errors become ``stem_core.errors``.

Every client is built with explicit limits instead of redis-py's defaults (which retry a
dead server for seconds and let a blocking read hang past its socket timeout):

* ``socket_timeout`` bounds every command; Stem's only blocking read (``XREAD BLOCK``)
  blocks at most ``RECEIVE_WAIT_SECONDS`` (1 s), well below it, so it can never hang;
* connection errors and timeouts are retried ``retry_attempts`` times with jittered
  exponential backoff, then surface as ``BrokerUnavailable``/``BackendUnavailable``
  carrying the URL with its password redacted;
* the pool is bounded (``max_connections``); running out is reported like a server
  that cannot be reached.

Cost matters here (SPEC §11 measures Stem against one raw ``XADD`` per call): redis-py
wraps every socket write in ``asyncio.wait_for`` (a task per command on Python 3.11,
~15 us on this machine). A write of a small command into a socket whose kernel buffer
has room cannot block, so ``_QuickWrite`` arms that timeout only when data is left
unsent; every read keeps its ``socket_timeout``. The blocking pool's condition
variable costs as much again, so the pool is the plain bounded one. The per-message
script calls go further (``Connection.evalsha``/``command``): their key lists are
packed into the wire format once (``resp``) and sent on connections the ``Connection``
keeps checked out of the pool (redis-py's per-command pool lock, socket probe and
argument encoding cost more than the round trip on a busy host), with the same retry
policy and error mapping as every other command.

Scripts (``lua/<name>.lua``, each headed by its KEYS/ARGV, with the helper files of
``LUA_LIBS`` in front) run as Redis Functions on Redis >= 7: ``function_library`` makes
one library of all of them, loaded once per server (``FUNCTION LOAD REPLACE``), and each
call is an ``FCALL`` that no longer re-runs the ~18 KB of helper definitions an
``EVALSHA`` of the prepended script executes every time. The library and function names
carry a hash of the text (``stem_<hash>``), so processes of different Stem versions on
one server each keep their own and loading is idempotent (concurrent loads of the same
text are harmless). A library gone (restart without persistence, ``FUNCTION FLUSH``) is
loaded again and the call repeated once, like a ``NOSCRIPT`` script. Older servers
(detected at connect from ``INFO server``), and servers refusing ``FUNCTION LOAD``
(ACL, renamed command), get the ``EVALSHA`` path. Scripts sent inside redis-py
pipelines (``Connection.script``: multi-queue publish transactions, the operator's
``live``/``stats`` scans, record pruning) stay ``EVALSHA`` on every server.

URL query parameters: Stem options (``lease_seconds`` ... see ``from_url`` of each
adapter), client tuning (``socket_timeout``, ``socket_connect_timeout``,
``max_connections``, ``retry_attempts``, ``health_check_interval``, ``client_name``) and
the standard TLS options of ``rediss://`` (``ssl_cert_reqs``, ``ssl_ca_certs``,
``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``,
``ssl_check_hostname``, ``ssl_min_version``, ``ssl_ciphers``). Anything else is a
``ConfigurationError``. Stem speaks RESP2 only (its reply parsing is pinned to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.asyncio.connection import SSLConnection
from redis.asyncio.connection import parse_url as redis_parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ...errors import BackendUnavailable, BrokerUnavailable, ConfigurationError, StemError
from ...settings import redact_url

log = logging.getLogger("stem.redis")

# Every command (including the reply of a blocking read) must answer within this.
SOCKET_TIMEOUT_S = 5.0
SOCKET_CONNECT_TIMEOUT_S = 3.0
# Connection errors are retried this many times (jittered backoff) before surfacing.
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_BASE_S = 0.05
RETRY_BACKOFF_CAP_S = 1.0
# Each idle consumer holds one connection while it blocks; producers share the rest.
POOL_MAX_CONNECTIONS = 128
HEALTH_CHECK_INTERVAL_S = 30
# Connections a client keeps checked out for its packed calls (``Connection.command``);
# more are taken from the pool during a burst of concurrent calls and given back after.
KEPT_CONNECTIONS = 8

# Client tuning accepted in the URL query or as keyword options, with converters.
CLIENT_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "retry_attempts": int,
    "health_check_interval": int,
    "client_name": str,
}
# Passed through to redis-py untouched (it converts them itself).
REDIS_PASSTHROUGH = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_password",
    "ssl_check_hostname", "ssl_min_version", "ssl_ciphers", "ssl_include_verify_flags", "ssl_exclude_verify_flags",
})
# Server replies that mean "cannot serve now" rather than "your request is wrong".
UNAVAILABLE_REPLIES = ("READONLY", "MISCONF", "OOM", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "BUSY ")
# The persistence/eviction warning is logged once per server per process.
_warned: set[str] = set()


@dataclass(frozen=True)
class RedisConfig:
    """What ``parse_url`` made of a URL: client kwargs, Stem options and the redacted URL."""

    shown_url: str
    password: str | None
    client: dict[str, Any]
    tuning: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def redact(self, text: str) -> str:
        if self.password:
            text = text.replace(self.password, "***")
        return text


def parse_url(url: str, options: dict[str, Any], known: dict[str, Callable[[Any], Any]]) -> RedisConfig:
    """Split ``url`` + keyword ``options`` into redis-py kwargs and the Stem options in ``known``.

    Keyword options win over query parameters; unknown names raise ``ConfigurationError``.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed Redis URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a redis:// or rediss:// URL: {shown!r}")
    everything = {**CLIENT_OPTIONS, **known}
    stem: dict[str, Any] = {}
    passthrough: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in everything:
            stem[key] = value
        elif key in REDIS_PASSTHROUGH:
            passthrough.append((key, value))
        else:
            raise ConfigurationError(_unknown(key, everything, shown))
    for key, value in options.items():
        if key not in everything:
            raise ConfigurationError(_unknown(key, everything, shown))
        stem[key] = value
    parsed: dict[str, Any] = {}
    for key, value in stem.items():
        try:
            parsed[key] = everything[key](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"Redis option {key}={value!r} is invalid: {exc}") from None
    if parts.path not in ("", "/") and not parts.path.strip("/").isdigit():
        raise ConfigurationError(f"Redis URL {shown!r}: the path must be a database number such as /0")
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(passthrough), ""))
    try:
        client = dict(redis_parse_url(clean))
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {shown!r}: {exc}") from None
    try:
        password = parts.password
    except ValueError:
        password = None
    for key in ("socket_timeout", "socket_connect_timeout", "max_connections", "retry_attempts"):
        if key in parsed and (parsed[key] <= 0 if key != "retry_attempts" else parsed[key] < 0):
            raise ConfigurationError(f"Redis option {key} must be positive, got {parsed[key]!r}")
    tuning = {k: parsed.pop(k) for k in list(parsed) if k in CLIENT_OPTIONS}
    return RedisConfig(shown_url=shown, password=password, client=client, tuning=tuning, options=parsed)


def _unknown(key: str, known: dict[str, Any], shown: str) -> str:
    names = ", ".join(sorted(set(known) | REDIS_PASSTHROUGH))
    return f"unknown Redis option {key!r} in {shown!r}; known: {names}"


# The helper files prepended to a script: broker scripts get ``lib.lua``; result-backend
# scripts (``results_*``) stand alone, except those writing statuses, which get
# ``results_lib.lua``, as do the broker scripts writing statuses in the same step.
LUA_LIBS: dict[str, tuple[str, ...]] = {
    "results_set": ("results_lib",),
    "results_set_many": ("results_lib",),
    "enqueue_with": ("lib", "results_lib"),
    "ack_with": ("lib", "results_lib"),
}


HELPER_FILES = ("lib", "results_lib")
# Functions that only read: flagged so the server runs them like any read command (on a
# replica, under maxmemory) rather than refusing them up front as possible writers.
READ_ONLY_SCRIPTS = frozenset({"live", "stats", "peek"})
# Servers from this version on run the scripts as one function library.
FUNCTIONS_SINCE = (7, 0)
# The server's reply to an FCALL of a function it does not have (redis-py drops "ERR ").
FUNCTION_MISSING = "Function not found"


def _lua_text(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_lua(name: str) -> str:
    """``lua/<name>.lua`` with its helper files (``LUA_LIBS``) in front."""
    libs = LUA_LIBS.get(name, () if name.startswith("results_") else ("lib",))
    return "\n".join([*(_lua_text(lib) for lib in libs), _lua_text(name)])


@lru_cache(maxsize=None)
def function_library() -> tuple[str, str]:
    """``(prefix, code)``: every script of ``lua/`` as one Redis Functions library.

    The code is the helper files once (their ``KEYS``/``ARGV`` are library-level locals
    that each function points at its call's before running), then every script's text
    as the body of function ``<prefix>_<name>``. ``prefix`` is the library name:
    ``stem_`` and a hash of the text, so a new Stem version loads a library of its own
    beside the old one instead of replacing functions older processes still call.
    """
    folder = resources.files(__package__).joinpath("lua")
    names = sorted(f.name[:-4] for f in folder.iterdir() if f.name.endswith(".lua") and f.name[:-4] not in HELPER_FILES)
    parts = ["local KEYS, ARGV", *(_lua_text(lib) for lib in HELPER_FILES)]
    for name in names:
        flags = "{ 'no-writes' }" if name in READ_ONLY_SCRIPTS else "{}"
        parts.append(f"redis.register_function{{ function_name = '@@_{name}', flags = {flags},\n"
                     f"  callback = function(keys, args)\n  KEYS, ARGV = keys, args\n{_lua_text(name)}\nend }}")
    body = "\n".join(parts)
    prefix = "stem_" + hashlib.sha1(body.encode()).hexdigest()[:16]
    return prefix, f"#!lua name={prefix}\n" + body.replace("'@@_", f"'{prefix}_")


def resp(*values: bytes | str | int) -> bytes:
    """``values`` in the Redis wire format (RESP bulk strings, no array header): pack a
    fixed run of keys once, then send it with every call (``Connection.evalsha``)."""
    out = []
    for value in values:
        kind = value.__class__
        if kind is str:
            value = value.encode()  # type: ignore[union-attr]
        elif kind is float:
            value = repr(value).encode()
        elif kind is not bytes:
            value = b"%d" % value
        out += (b"$", str(len(value)).encode(), b"\r\n", value, b"\r\n")  # type: ignore[arg-type]
    return b"".join(out)


class Guard:
    """``with conn.guard:`` turns any redis-py error into the Stem error of this role."""

    __slots__ = ("_conn",)

    def __init__(self, conn: "Connection") -> None:
        self._conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is not None and isinstance(exc, rex.RedisError):
            raise self._conn.translate(exc) from None
        return False


class Connection:
    """One Redis client (a bounded pool) for a broker or a result backend."""

    def __init__(self, config: RedisConfig, *, role: str) -> None:
        self.config = config
        self.role = role
        self.unavailable: type[BrokerUnavailable] = BackendUnavailable if role == "backend" else BrokerUnavailable
        self.guard = Guard(self)
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        # Connections checked out of the pool for ``command`` (a fresh list per open, so a
        # call still running when the client closes never returns one to the next pool).
        self._idle: list[Any] = []
        # name -> the packed ``FCALL <function>`` / ``EVALSHA <sha>`` prefix of ``evalsha``.
        self._heads: dict[str, bytes] = {}
        # Whether scripts run as functions (Redis >= 7, see the module docstring).
        self.functions = False

    @property
    def shown_url(self) -> str:
        return self.config.shown_url

    @property
    def socket_timeout(self) -> float:
        """Seconds any reply may take; a blocking command must block for less."""
        return float(self.config.tuning.get("socket_timeout", SOCKET_TIMEOUT_S))

    def translate(self, exc: BaseException) -> StemError:
        """The Stem error for a redis-py exception (passwords redacted)."""
        text = self.config.redact(str(exc)) or type(exc).__name__
        where = f"Redis at {self.config.shown_url}"
        if isinstance(exc, rex.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
            return self.unavailable(f"{where} refused the credentials ({text})")
        if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError)):
            return self.unavailable(f"cannot reach {where}: {text}")
        if isinstance(exc, rex.ResponseError) and text.upper().startswith(UNAVAILABLE_REPLIES):
            return self.unavailable(f"{where} cannot serve the request: {text}")
        return StemError(f"{where} failed: {text}")

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise self.unavailable(f"the Redis {self.role} for {self.config.shown_url} is closed")
        return self._client

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def open(self) -> Redis:
        """Create the pool and check the server answers (idempotent)."""
        if self._client is not None:
            return self._client
        kwargs = dict(self.config.client)
        tuning = self.config.tuning
        kwargs.setdefault("socket_timeout", tuning.get("socket_timeout", SOCKET_TIMEOUT_S))
        kwargs.setdefault("socket_connect_timeout", tuning.get("socket_connect_timeout", SOCKET_CONNECT_TIMEOUT_S))
        attempts = tuning.get("retry_attempts", RETRY_ATTEMPTS)
        retry = Retry(ExponentialWithJitterBackoff(base=RETRY_BACKOFF_BASE_S, cap=RETRY_BACKOFF_CAP_S), attempts,
                      supported_errors=(rex.ConnectionError, rex.TimeoutError))
        kwargs["connection_class"] = StemSSLConnection if kwargs.get("connection_class") is SSLConnection else StemConnection
        pool = ConnectionPool(
            max_connections=tuning.get("max_connections", POOL_MAX_CONNECTIONS),
            retry=retry,
            health_check_interval=tuning.get("health_check_interval", HEALTH_CHECK_INTERVAL_S),
            client_name=tuning.get("client_name", f"stem-{self.role}"),
            protocol=2,
            **kwargs,
        )
        client = Redis(connection_pool=pool)
        try:
            with self.guard:
                await client.ping()
            self.functions = await self._functions_supported(client)
        except BaseException:
            await client.aclose()
            await pool.disconnect()
            raise
        self._heads.clear()
        self._client = client
        await self._warn_once(client)
        return client

    async def _functions_supported(self, client: Redis) -> bool:
        """Whether the server runs Redis Functions (``INFO server``: version >= 7.0).
        A server hiding INFO is assumed to; ``evalsha`` falls back if it does not."""
        try:
            with self.guard:
                version = str((await client.info("server")).get("redis_version", ""))
        except StemError as exc:
            if isinstance(exc, self.unavailable):
                raise
            return True
        try:
            return tuple(int(part) for part in version.split(".")[:2]) >= FUNCTIONS_SINCE
        except ValueError:
            return True

    async def close(self) -> None:
        client, self._client = self._client, None
        self._scripts.clear()
        self._heads.clear()
        self._idle = []
        if client is not None:
            try:
                await client.aclose()
                await client.connection_pool.disconnect()
            except (rex.RedisError, OSError):  # closing a dead connection: nothing left to release
                pass

    async def call(self, name: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        """Run ``lua/<name>.lua`` (EVALSHA; loaded again after a server restart or flush)."""
        return await self.evalsha(name, len(keys), len(args), resp(*keys, *args))

    async def evalsha(self, name: str, nkeys: int, nargs: int, packed: bytes) -> Any:
        """``call`` with the keys and then the arguments already packed (``resp``):
        ``nkeys`` keys and ``nargs`` arguments."""
        head = self._heads.get(name)
        if head is None:
            if self.functions:
                head = resp("FCALL", f"{function_library()[0]}_{name}")
            else:
                head = resp("EVALSHA", self.script(name).sha)
            self._heads[name] = head
        tail = b"%s%s" % (resp(nkeys), packed)
        command = b"*%d\r\n%s%s" % (3 + nkeys + nargs, head, tail)
        with self.guard:
            try:
                return await self._send(command)
            except rex.NoScriptError:
                await self.client.script_load(self.script(name).script)
                return await self._send(command)
            except rex.ResponseError as exc:
                if not head.startswith(b"$5\r\nFCALL") or not _function_trouble(exc):
                    raise
            # The library is not on the server (restart, FUNCTION FLUSH) or FCALL is not known.
            if await self._load_functions():
                return await self._send(command)
        return await self.evalsha(name, nkeys, nargs, packed)  # this server gets EVALSHA from now on

    async def _load_functions(self) -> bool:
        """Load the library (any number of processes may do so at once: same name, same
        text). False, and the ``EVALSHA`` path from now on, when the server refuses."""
        try:
            await self.client.function_load(function_library()[1], replace=True)
            return True
        except rex.ResponseError as exc:
            if self.translate(exc).__class__ is self.unavailable:
                raise
            log.warning("Redis at %s refused FUNCTION LOAD (%s); Stem's scripts run through EVALSHA",
                        self.config.shown_url, self.config.redact(str(exc)))
            self.functions = False
            self._heads.clear()
            return False

    async def command(self, command: bytes) -> Any:
        """Send one packed command and read its reply (connection errors retried like
        any other command, redis-py errors mapped by ``guard``)."""
        with self.guard:
            return await self._send(command)

    async def _send(self, command: bytes) -> Any:
        client = self.client
        idle = self._idle
        conn = idle.pop() if idle else await client.connection_pool.get_connection()
        try:
            return await conn.retry.call_with_retry(lambda: _exchange(conn, command), lambda _: conn.disconnect())
        finally:
            if len(idle) < KEPT_CONNECTIONS:
                idle.append(conn)
            else:  # after a burst of concurrent calls: the pool's other users need them
                await client.connection_pool.release(conn)

    def script(self, name: str) -> Any:
        """The registered ``lua/<name>.lua`` (redis-py reloads it after NOSCRIPT)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(load_lua(name))
        return script

    async def _warn_once(self, client: Redis) -> None:
        """Log (once per server) when Redis may evict keys or does not persist them."""
        key = self.config.shown_url.split("?")[0]
        if key in _warned:
            return
        _warned.add(key)
        try:
            policy = _config_value(await client.config_get("maxmemory-policy"), "maxmemory-policy")
            aof = _config_value(await client.config_get("appendonly"), "appendonly")
            save = _config_value(await client.config_get("save"), "save")
        except rex.RedisError:
            # CONFIG is often disabled on managed servers; INFO tells most of it.
            try:
                info = await client.info("memory")
                policy = str(info.get("maxmemory_policy", ""))
                aof = "yes" if (await client.info("persistence")).get("aof_enabled") else "no"
                save = "unknown"
            except rex.RedisError:
                return
        if policy and policy != "noeviction":
            log.warning("Redis at %s has maxmemory-policy=%s: it may evict Stem's keys under memory pressure "
                        "(queued tasks, leases, results); set maxmemory-policy noeviction", key, policy)
        if aof == "no" and not save.strip():
            log.warning("Redis at %s persists nothing (appendonly no, no save points): a restart loses every "
                        "queued task; enable appendonly yes for durable queues", key)


async def _exchange(conn: Any, command: bytes) -> Any:
    """Send ``command`` and read its reply (RESP2), bounded by the socket timeout.

    redis-py's ``read_response`` arms an ``asyncio.timeout`` per reply (a task-cancelling
    timer with its bookkeeping); here a plain timer aborts the socket instead when the
    reply is late, which ends the read, and the error says it timed out. As in redis-py,
    any failure while reading leaves the connection disconnected, never half-read.
    """
    await conn.send_packed_command(command)
    loop = asyncio.get_running_loop()
    late: list[bool] = []
    timer = loop.call_later(conn.socket_timeout, _abort, conn, late)
    try:
        response = await conn._parser.read_response(disable_decoding=False)
    except BaseException as exc:
        await conn.disconnect(nowait=True)
        if late:
            raise rex.TimeoutError(f"Timeout reading from {conn._host_error()}") from None
        if isinstance(exc, OSError):
            raise rex.ConnectionError(f"Error while reading from {conn._host_error()}: {exc}") from exc
        raise
    finally:
        timer.cancel()
    if conn.health_check_interval:
        conn.next_health_check = loop.time() + conn.health_check_interval
    if isinstance(response, rex.ResponseError):
        raise response from None
    return response


def _function_trouble(exc: rex.ResponseError) -> bool:
    """An FCALL reply meaning "load the library" (or "this server has no functions")."""
    text = str(exc)
    return text.startswith(FUNCTION_MISSING) or text.lower().startswith("unknown command")


def _abort(conn: Any, late: list[bool]) -> None:
    late.append(True)
    writer = conn._writer
    if writer is not None:
        writer.transport.abort()


class _QuickWrite:
    """``send_packed_command`` without a per-command ``asyncio.wait_for`` (see the module
    docstring); the timeout still bounds a write that has to wait for the socket."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        conn: Any = self
        if not conn.is_connected:
            await conn.connect_check_health(check_health=False)
        if check_health:
            await conn.check_health()
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer = conn._writer
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                await asyncio.wait_for(writer.drain(), conn.socket_timeout)
        except asyncio.TimeoutError:
            await conn.disconnect(nowait=True)
            raise rex.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise rex.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # Part of a command may be on the wire: the connection cannot be reused.
            await conn.disconnect(nowait=True)
            raise


class StemConnection(_QuickWrite, RedisConnection):
    pass


class StemSSLConnection(_QuickWrite, SSLConnection):
    pass


def _config_value(reply: dict[Any, Any], name: str) -> str:
    value = reply.get(name, reply.get(name.encode(), ""))
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["Connection", "Guard", "RedisConfig", "function_library", "load_lua", "parse_url", "resp"]
