"""Task statuses to script records and back: the one place a status is encoded for Redis.

``results_set.lua``, ``results_set_many.lua`` and the broker's fused
``enqueue_with.lua``/``ack_with.lua`` all take the records ``StatusBatch`` packs, in the
format ``results_lib.lua`` reads.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ...clock import to_iso, utcnow
from ...contract.backend import StatusWrite
from ...contract.types import TaskStatus
from .codec import dumps, text
from .keys import STATES, ResultKeys, to_us

# StatusBatch.args(): records, updated ISO, updated us, watch channel prefix.
STATUS_ARGS = 4
STATE_INDEX = {state: k + 1 for k, state in enumerate(STATES)}  # results_lib.lua's state index


class StatusBatch:
    """Status writes for one script call, packed as results_lib.lua's records.

    ``keys`` are the keys the records name, numbered from KEYS position ``first_key``
    (each queue/task index key once); ``args()`` the records, the updated_at stamp (one per batch) and the
    watch channel prefix, the arguments every status-writing script takes in that order.
    """

    __slots__ = ("stamp", "iso", "keys", "_layout", "_first", "_labels", "_parts")

    def __init__(self, layout: ResultKeys, first_key: int) -> None:
        self.stamp: datetime = utcnow()
        self.iso = to_iso(self.stamp)
        self.keys: list[str] = []
        self._layout = layout
        self._first = first_key
        # (queue, task) -> the records' "<q>,<t>," key positions and the labels, encoded
        # (a batch's statuses mostly share them; each index key is passed once).
        self._labels: dict[tuple[str, str], tuple[str, bytes, bytes]] = {}
        self._parts: list[bytes] = []

    def _key(self, key: str) -> int:
        self.keys.append(key)
        return self._first + len(self.keys) - 1

    def add(self, write: StatusWrite) -> None:
        p = self._layout.prefix
        task_id, state, meta = write.task_id, write.state, write.meta
        status = TaskStatus(id=task_id, state=state, payload=write.payload, error=write.error, attempt=write.attempt,
                            meta=meta)
        fields = status.to_dict()
        fields["updated_at"] = self.iso  # formatted once per batch
        body = dumps(fields).encode()
        ident = task_id.encode()
        labels = (_label(meta.get("queue")), _label(meta.get("task")))
        known = self._labels.get(labels)
        if known is None:
            queue, task = labels
            at = f"{self._key(p + 'q:' + queue) if queue else 0},{self._key(p + 't:' + task) if task else 0},"
            known = self._labels[labels] = (at, queue.encode(), task.encode())
        at, q, t = known
        head = (f"{STATE_INDEX[state]},{self._key(p + 's:' + task_id)},{at}{max(1, int(write.ttl * 1000))},"
                f"{len(ident)},{len(body)},{len(q)},{len(t)}:")
        self._parts += (head.encode(), ident, body, q, t)

    def args(self) -> list[Any]:
        return [b"".join(self._parts), self.iso, to_us(self.stamp), self._layout.watch_prefix]


def stored(write: StatusWrite, created_at: datetime, updated_at: datetime) -> TaskStatus:
    """What ``set_status`` returns for ``write``, stored with these timestamps."""
    return TaskStatus(id=write.task_id, state=write.state, payload=write.payload, error=write.error,
                      attempt=write.attempt, meta=write.meta, created_at=created_at, updated_at=updated_at)


def _label(value: Any) -> str:
    """An index label from a meta value: strings only ('' = not indexed)."""
    return value if isinstance(value, str) else ""


def decode_status(body: bytes | str, created: bytes | str | None) -> TaskStatus:
    """A stored status from its JSON and its ``c`` (created_at) field."""
    data = json.loads(body)
    data["created_at"] = text(created) if created is not None else data.get("updated_at")
    return TaskStatus.from_dict(data)


__all__ = ["STATE_INDEX", "STATUS_ARGS", "StatusBatch", "decode_status", "stored"]
