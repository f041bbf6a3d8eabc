"""Redis key layout of one namespace (the Lua files document what each key holds).

Queue keys are ``<ns>:{<queue>}:<suffix>``: the hash tag puts every key of a queue in
one Cluster slot, and since queue names cannot contain ``{`` or ``}`` (and namespaces
cannot contain ``:``), no queue name can produce another queue's key. Broadcast
channels use ``<ns>:{<channel>}:bc`` / ``:subs``, suffixes no queue key has; result
backend keys live under ``<ns>:r{<ns>}:``, which no queue or channel key can start with.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ...clock import UTC
from ...contract.types import TaskState
from .wire import resp

BANDS = 10  # one stream per priority 0..9
QUEUE_SUFFIXES = tuple(f"s{band}" for band in range(BANDS)) + (
    "delayed", "dly", "leases", "lease", "idx", "stats", "dead", "deadbody", "p", "w",
)
BLOCK_SIZE = len(QUEUE_SUFFIXES)  # 20, as lib.lua's BLOCK
DEAD_INDEX = QUEUE_SUFFIXES.index("dead")
DEADBODY_INDEX = QUEUE_SUFFIXES.index("deadbody")
P_INDEX = QUEUE_SUFFIXES.index("p")
W_INDEX = QUEUE_SUFFIXES.index("w")
# lib.lua settle_keys order after the lid's stream.
SETTLE_SUFFIXES = ("leases", "lease", "idx", "stats", "delayed", "dly", "dead", "deadbody", "w")
ACK_KEYS = 5  # ack.lua (and ack_with.lua) take the first five settle keys
# Bounded so a process that touches many queue names does not grow without end.
KEY_CACHE_LIMIT = 4096
# The result backend's states in results_lib.lua's order (its x:<state> keys, its state index).
STATES = (TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRIED,
          TaskState.CANCELLED)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def queue_block(namespace: str, queue: str) -> tuple[str, ...]:
    """The 20 keys of ``queue`` in lib.lua's order."""
    prefix = f"{namespace}:{{{queue}}}:"
    return tuple(prefix + suffix for suffix in QUEUE_SUFFIXES)


def registry_key(namespace: str) -> str:
    """SET of every queue name ever published to in the namespace."""
    return f"{namespace}:queues"


def channel_keys(namespace: str, channel: str) -> tuple[str, str]:
    """``(stream, subscribers)`` of a broadcast channel."""
    prefix = f"{namespace}:{{{channel}}}:"
    return prefix + "bc", prefix + "subs"


def results_prefix(namespace: str) -> str:
    return f"{namespace}:r{{{namespace}}}:"


def to_us(value: datetime) -> int:
    """Exact POSIX microseconds of an aware datetime (no float rounding)."""
    return (value - _EPOCH) // _US


def from_us(value: int | float) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


class QueueKeys:
    """Every key list the scripts of one queue take, built once (as bytes: redis-py sends
    bytes as they are, which matters on the per-message paths); the per-message ones also
    packed for the wire (``wire.resp``)."""

    __slots__ = ("block", "settle", "packed_block", "packed_ack")

    def __init__(self, namespace: str, queue: str) -> None:
        self.block = tuple(key.encode() for key in queue_block(namespace, queue))
        rest = tuple(self.block[QUEUE_SUFFIXES.index(s)] for s in SETTLE_SUFFIXES)
        # The ten settle keys of lib.lua for each lid prefix: "<band>s" (band stream) or "<band>p" (P:p).
        self.settle = {f"{band}s": (self.block[band],) + rest for band in range(BANDS)}
        self.settle.update({f"{band}p": (self.block[P_INDEX],) + rest for band in range(BANDS)})
        self.packed_block = resp(*self.block)
        # ack.lua's five settle keys, packed, by lid prefix.
        self.packed_ack = {prefix: resp(*keys[:ACK_KEYS]) for prefix, keys in self.settle.items()}

    def settle_for(self, lid: str) -> tuple[bytes, ...]:
        return self.settle[lid[:2]]


class KeyCache:
    """``QueueKeys`` by queue name (bounded)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._queues: dict[str, QueueKeys] = {}

    def __call__(self, queue: str) -> tuple[bytes, ...]:
        return self.of(queue).block

    def of(self, queue: str) -> QueueKeys:
        keys = self._queues.get(queue)
        if keys is None:
            if len(self._queues) >= KEY_CACHE_LIMIT:
                self._queues.clear()
            keys = self._queues[queue] = QueueKeys(self.namespace, queue)
        return keys


class ResultKeys:
    """The keys of a namespace's result backend (``lua/results_lib.lua`` draws them):
    ``s:<id>`` statuses; the ``ix``, ``exp``, ``all``, ``x:<state>``, ``q:<queue>``,
    ``t:<task>`` indexes; ``ver``; ``w:<id>`` watch channels; ``hb:<worker>`` and ``hbs``;
    ``rec:<kind>``/``recx:<kind>``/``recw:<kind>`` records; ``audit``."""

    __slots__ = ("prefix", "index", "expiries", "all", "version", "states", "status_keys", "packed_status_keys",
                 "watch_prefix", "heartbeats", "audit", "schedules", "schedule_versions")

    def __init__(self, namespace: str) -> None:
        p = self.prefix = results_prefix(namespace)
        self.index, self.expiries, self.all, self.version = p + "ix", p + "exp", p + "all", p + "ver"
        self.states = [p + "x:" + s.value for s in STATES]
        # results_lib.lua's status_keys, the same for every status write.
        self.status_keys: tuple[str, ...] = (self.index, self.expiries, self.all, *self.states, self.version)
        self.packed_status_keys = resp(*self.status_keys)
        self.watch_prefix = p + "w:"
        self.heartbeats = p + "hbs"
        self.audit = p + "audit"
        # The schedule store: id -> document JSON, id -> version (results_schedule_*.lua).
        self.schedules, self.schedule_versions = p + "sched", p + "schedv"

    def status(self, task_id: str) -> str:
        return self.prefix + "s:" + task_id

    def queue_index(self, queue: str) -> str:
        """The index of a queue label; ``all`` for no label (the scripts then skip it)."""
        return self.prefix + "q:" + queue if queue else self.all

    def task_index(self, task: str) -> str:
        return self.prefix + "t:" + task if task else self.all

    def heartbeat(self, worker_id: str) -> str:
        return self.prefix + "hb:" + worker_id

    def records(self, kind: str) -> list[str]:
        """``[records, expiries, written]`` of one record kind."""
        return [self.prefix + "rec:" + kind, self.prefix + "recx:" + kind, self.prefix + "recw:" + kind]


__all__ = [
    "BANDS", "BLOCK_SIZE", "DEADBODY_INDEX", "DEAD_INDEX", "P_INDEX", "STATES", "W_INDEX", "KeyCache", "QueueKeys",
    "ResultKeys", "channel_keys", "from_us", "queue_block", "registry_key", "results_prefix", "to_us",
]
