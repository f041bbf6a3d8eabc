"""``RedisConnection``: one client (a bounded pool) for a broker or a result backend, and
the one place where redis-py errors become ``stem_core.errors``.

Every client is built with explicit limits instead of redis-py's defaults (which retry a
dead server for seconds and let a blocking read hang past its socket timeout):

* ``socket_timeout`` bounds every command; Stem's only blocking read (``XREAD BLOCK``)
  blocks at most ``RECEIVE_WAIT_SECONDS`` (1 s), well below it, so it can never hang;
* connection errors and timeouts are retried ``retry_attempts`` times with jittered
  exponential backoff, then surface as ``BrokerUnavailable``/``BackendUnavailable``
  carrying the URL with its password redacted;
* the pool is bounded (``max_connections``); running out is reported like a server
  that cannot be reached. It is the plain bounded pool: the blocking pool's condition
  variable costs as much as a round trip on the per-message paths.

Besides redis-py's commands (``client``, under ``guard``), a connection sends Stem's
packed commands (``command``, ``evalsha``: ``wire.py``) and runs its scripts as
functions or through ``EVALSHA`` (``scripts.py``). What needs redis-py's internals is
in ``internals.py`` alone; the URL and its options are ``url.py``.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ...errors import BackendUnavailable, BrokerUnavailable, StemError
from .internals import connection_class
from .scripts import RedisScripts, function_library, function_trouble, runs_functions
from .url import RedisConfig
from .wire import RedisWire, resp

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
# Server replies that mean "cannot serve now" rather than "your request is wrong".
UNAVAILABLE_REPLIES = ("READONLY", "MISCONF", "OOM", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "BUSY ")
# The persistence/eviction warning is logged once per server per process.
_warned: set[str] = set()


class Guard:
    """``with conn.guard:`` turns any redis-py error into the Stem error of this role."""

    __slots__ = ("_conn",)

    def __init__(self, conn: "RedisConnection") -> None:
        self._conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is not None and isinstance(exc, rex.RedisError):
            raise self._conn.translate(exc) from None
        return False


class RedisConnection:
    """One Redis client (a bounded pool) for a broker or a result backend."""

    def __init__(self, config: RedisConfig, *, role: str) -> None:
        self.config = config
        self.role = role
        self.unavailable: type[BrokerUnavailable] = BackendUnavailable if role == "backend" else BrokerUnavailable
        self.guard = Guard(self)
        # The client, its wire and its scripts exist while the connection is open.
        self._client: Redis | None = None
        self._wire: RedisWire | None = None
        self._scripts: RedisScripts | None = None

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

    def _closed(self) -> BrokerUnavailable:
        return self.unavailable(f"the Redis {self.role} for {self.config.shown_url} is closed")

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise self._closed()
        return self._client

    @property
    def scripts(self) -> RedisScripts:
        if self._scripts is None:
            raise self._closed()
        return self._scripts

    @property
    def wire(self) -> RedisWire:
        if self._wire is None:
            raise self._closed()
        return self._wire

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
        kwargs["connection_class"] = connection_class(kwargs.get("connection_class"))
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
            functions = await self._functions_supported(client)
        except BaseException:
            await client.aclose()
            await pool.disconnect()
            raise
        self._scripts = RedisScripts(client, functions=functions)
        self._wire = RedisWire(pool)
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
        return runs_functions(version)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._scripts = None
        self._wire = None
        if client is not None:
            try:
                await client.aclose()
                await client.connection_pool.disconnect()
            except (rex.RedisError, OSError):  # closing a dead connection: nothing left to release
                pass

    async def ping(self) -> None:
        with self.guard:
            await self.client.ping()

    async def call(self, name: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        """Run ``lua/<name>.lua`` (loaded again after a server restart or flush)."""
        return await self.evalsha(name, len(keys), len(args), resp(*keys, *args))

    async def evalsha(self, name: str, nkeys: int, nargs: int, packed: bytes) -> Any:
        """``call`` with the keys and then the arguments already packed (``resp``):
        ``nkeys`` keys and ``nargs`` arguments. Every Stem script call goes through here."""
        scripts = self._scripts
        if scripts is None:
            raise self._closed()
        head = scripts.heads.get(name) or scripts.head(name)  # the dict first: this runs per message
        tail = b"%s%s" % (resp(nkeys), packed)
        command = b"*%d\r\n%s%s" % (3 + nkeys + nargs, head, tail)
        with self.guard:
            try:
                return await self.wire.send(command)
            except rex.NoScriptError:
                await self.client.script_load(scripts.registered(name).script)
                return await self.wire.send(command)
            except rex.ResponseError as exc:
                if not scripts.is_function_call(head) or not function_trouble(exc):
                    raise
            # The library is not on the server (restart, FUNCTION FLUSH) or FCALL is not known.
            if await self._load_functions(scripts):
                return await self.wire.send(command)
        return await self.evalsha(name, nkeys, nargs, packed)  # this server gets EVALSHA from now on

    async def _load_functions(self, scripts: RedisScripts) -> bool:
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
            scripts.use_evalsha()
            return False

    async def command(self, command: bytes) -> Any:
        """Send one packed command and read its reply (connection errors retried like
        any other command, redis-py errors mapped by ``guard``)."""
        with self.guard:
            return await self.wire.send(command)

    def script(self, name: str) -> Any:
        """The registered ``lua/<name>.lua``, to call inside a redis-py pipeline."""
        return self.scripts.registered(name)

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


def _config_value(reply: dict[Any, Any], name: str) -> str:
    value = reply.get(name, reply.get(name.encode(), ""))
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["Guard", "RedisConnection"]
