"""Stem's Lua scripts: the files of ``lua/``, the Functions library made of them, and the
per-client state of how they are called.

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
pipelines (``RedisConnection.script``: multi-queue publish transactions, the operator's
``live``/``stats`` scans, record pruning) stay ``EVALSHA`` on every server.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Any

from redis import exceptions as rex
from redis.asyncio import Redis

from .wire import resp

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
# How a packed FCALL head starts (``RedisScripts.head``).
_FCALL_HEAD = resp("FCALL")


def lua_text(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_lua(name: str) -> str:
    """``lua/<name>.lua`` with its helper files (``LUA_LIBS``) in front."""
    libs = LUA_LIBS.get(name, () if name.startswith("results_") else ("lib",))
    return "\n".join([*(lua_text(lib) for lib in libs), lua_text(name)])


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
    parts = ["local KEYS, ARGV", *(lua_text(lib) for lib in HELPER_FILES)]
    for name in names:
        flags = "{ 'no-writes' }" if name in READ_ONLY_SCRIPTS else "{}"
        parts.append(f"redis.register_function{{ function_name = '@@_{name}', flags = {flags},\n"
                     f"  callback = function(keys, args)\n  KEYS, ARGV = keys, args\n{lua_text(name)}\nend }}")
    body = "\n".join(parts)
    prefix = "stem_" + hashlib.sha1(body.encode()).hexdigest()[:16]
    return prefix, f"#!lua name={prefix}\n" + body.replace("'@@_", f"'{prefix}_")


def runs_functions(version: str) -> bool:
    """Whether a server of this ``redis_version`` runs Redis Functions (unparseable: assumed
    to; ``RedisConnection.evalsha`` falls back if it does not)."""
    try:
        return tuple(int(part) for part in version.split(".")[:2]) >= FUNCTIONS_SINCE
    except ValueError:
        return True


def function_trouble(exc: rex.ResponseError) -> bool:
    """An FCALL reply meaning "load the library" (or "this server has no functions")."""
    text = str(exc)
    return text.startswith(FUNCTION_MISSING) or text.lower().startswith("unknown command")


class RedisScripts:
    """How one open client calls the scripts: as functions or through ``EVALSHA``, the
    packed head of each call, and the scripts registered for pipelines (redis-py reloads
    those after NOSCRIPT). Made at each open, so a server restarted between two opens is
    asked again."""

    __slots__ = ("functions", "heads", "_client", "_registered")

    def __init__(self, client: Redis, *, functions: bool) -> None:
        # Whether scripts run as functions (Redis >= 7, see the module docstring).
        self.functions = functions
        self._client = client
        self._registered: dict[str, Any] = {}
        # name -> the packed ``FCALL <function>`` / ``EVALSHA <sha>`` prefix of a call (``head``).
        self.heads: dict[str, bytes] = {}

    def head(self, name: str) -> bytes:
        """The packed start of a call of ``name``: the command and the function or sha."""
        head = self.heads.get(name)
        if head is None:
            if self.functions:
                head = resp("FCALL", f"{function_library()[0]}_{name}")
            else:
                head = resp("EVALSHA", self.registered(name).sha)
            self.heads[name] = head
        return head

    def registered(self, name: str) -> Any:
        """The registered ``lua/<name>.lua`` (an ``AsyncScript``: its sha, its text, and a
        call that works inside pipelines)."""
        script = self._registered.get(name)
        if script is None:
            script = self._registered[name] = self._client.register_script(load_lua(name))
        return script

    @staticmethod
    def is_function_call(head: bytes) -> bool:
        return head.startswith(_FCALL_HEAD)

    def use_evalsha(self) -> None:
        """This server refused the library: every later call is an ``EVALSHA``."""
        self.functions = False
        self.heads.clear()


__all__ = ["RedisScripts", "function_library", "function_trouble", "load_lua", "lua_text", "runs_functions"]
