"""Envelopes to bind parameters and rows back to envelopes.

Rows are the only place a malformed envelope can come from (an operator's hand-written
INSERT, another program sharing the schema): ``decode`` never raises, it returns the
placeholder the contract asks for, and the broker dead-letters it as ``invalid-envelope``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from ...contract.backend import check_json
from ...envelope import Envelope
from ...errors import InvalidEnvelope

T = TypeVar("T")

INVALID_NAME = "<invalid>"
INVALID_REASON = "invalid-envelope"
# The raw text kept in a placeholder's meta is cut to this many characters.
RAW_KEEP_CHARS = 4000


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is (a ``jsonb`` parameter)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dead_letter_meta(value: Any) -> str:
    """A dead letter's meta as JSON (``ValueError`` unless it is a JSON object)."""
    return dumps(check_json(value, "dead-letter meta"))


def visibility_ms(envelope: Envelope) -> int | None:
    vt = envelope.visibility_timeout
    return max(1, int(round(vt * 1000))) if vt is not None else None


def publish_params(envelope: Envelope) -> dict[str, Any]:
    return {
        "msg_id": envelope.id,
        "queue": envelope.queue,
        "name": envelope.name,
        "priority": envelope.priority,
        "not_before": envelope.not_before,
        "ready_at": envelope.ready_at,
        "visibility_ms": visibility_ms(envelope),
        "envelope": envelope.to_json(),
    }


def publish_many_params(envelopes: list[Envelope]) -> dict[str, Any]:
    return {
        "msg_ids": [e.id for e in envelopes],
        "queues": [e.queue for e in envelopes],
        "names": [e.name for e in envelopes],
        "priorities": [e.priority for e in envelopes],
        "not_befores": [e.not_before for e in envelopes],
        "ready_ats": [e.ready_at for e in envelopes],
        "visibility_ms": [visibility_ms(e) for e in envelopes],
        "envelopes": [e.to_json() for e in envelopes],
    }


def decode(raw: Any, row_id: int, queue: str) -> tuple[Envelope, bool]:
    """``(envelope, ok)``: the stored envelope, or the ``<invalid>`` placeholder and False."""
    try:
        if isinstance(raw, (str, bytes, bytearray)):
            return Envelope.from_json(raw), True
        return Envelope.from_dict(raw), True
    except InvalidEnvelope as exc:
        return placeholder(raw, row_id, queue, str(exc)), False
    except (TypeError, ValueError) as exc:
        return placeholder(raw, row_id, queue, f"undecodable envelope: {exc}"), False


def placeholder(raw: Any, row_id: int, queue: str, error: str) -> Envelope:
    """``Envelope(name="<invalid>", id=<row id>, queue=<queue>, meta={raw, error})``."""
    try:
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(raw)
    meta = {"raw": text[:RAW_KEEP_CHARS], "error": error}
    try:
        return Envelope(name=INVALID_NAME, id=str(row_id), queue=queue, meta=meta)
    except InvalidEnvelope:  # a hand-written row may even carry an illegal queue name
        return Envelope(name=INVALID_NAME, id=str(row_id), meta={**meta, "queue": queue})


def unique_runs(items: list[T], key: Callable[[T], Any]) -> list[list[T]]:
    """``items`` cut, in order, into runs in which no key repeats: the batches one statement
    each can write when a row may be touched once per statement (ON CONFLICT, unnest)."""
    runs: list[list[T]] = [[]]
    seen: set[Any] = set()
    for item in items:
        k = key(item)
        if k in seen:
            runs.append([])
            seen.clear()
        seen.add(k)
        runs[-1].append(item)
    return runs


def parse_receipt(receipt: str) -> tuple[int, int] | None:
    """``(row id, lease)`` from ``"<id>:<lease>"``; None for anything else (a stale no-op)."""
    head, sep, tail = receipt.partition(":")
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return int(head), int(tail)


__all__ = [
    "INVALID_NAME", "INVALID_REASON", "dead_letter_meta", "decode", "dumps", "parse_receipt", "placeholder",
    "publish_many_params", "publish_params", "unique_runs",
]
