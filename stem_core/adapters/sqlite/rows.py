"""Envelopes to rows and back, including rows that do not decode.

A row whose ``envelope`` text is not a valid envelope (written by hand, by a buggy
producer, or damaged) must neither crash a consumer nor block its queue. The claim that
meets it moves it to the dead letters with reason ``invalid-envelope``. Since a
``DeadLetterEntry`` needs an ``Envelope``, it gets a placeholder::

    Envelope(name="<invalid>", id=<the row's msg_id, else "sqlite-row-<rowid>">,
             queue=<the row's queue>,
             meta={"raw": <the stored text, first RAW_KEEP_CHARS characters>,
                   "error": <why it did not decode>, "row_id": <rowid>})

and the entry's ``meta`` repeats ``error``. Replaying such an entry publishes the
placeholder, which a worker then dead-letters as an unregistered task.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ...clock import UTC, to_epoch
from ...contract.types import DeadLetterEntry
from ...envelope import Envelope, validate_name
from ...errors import InvalidEnvelope, InvalidName

INVALID_REASON = "invalid-envelope"
INVALID_NAME = "<invalid>"
# How much of an undecodable row is kept in its dead letter.
RAW_KEEP_CHARS = 2000
ID_MAX_LENGTH = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(value: float | None) -> datetime | None:
    """A stored POSIX time as an aware datetime (None stays None), exact to the
    microsecond (``fromtimestamp`` may land one microsecond low)."""
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=round(float(value) * 1_000_000))


def job_params(ns: str, envelope: Envelope, now: float) -> dict[str, Any]:
    """Bind parameters of ``publish`` for one envelope."""
    vt = envelope.visibility_timeout
    # The wire format carries whole milliseconds and reads 0 as "no timeout"; the column
    # must say what a decoded copy of the envelope will say (NULL: the broker default).
    vt_ms = int(round(vt * 1000)) if vt is not None else 0
    return {
        "ns": ns,
        "msg_id": envelope.id,
        "queue": envelope.queue,
        "name": envelope.name,
        "priority": envelope.priority,
        "enqueued_at": to_epoch(envelope.enqueued_at),
        "not_before": to_epoch(envelope.not_before) if envelope.not_before is not None else None,
        "ready_at": to_epoch(envelope.ready_at),
        "visibility_ms": vt_ms if vt_ms > 0 else None,
        "attempt": envelope.attempt,
        "envelope": envelope.to_json(),
        "now": now,
    }


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw if isinstance(raw, str) else repr(raw)


def decode_job(raw: Any, queue: str) -> Envelope:
    """The envelope stored in a row; its queue is the row's. Raises ``InvalidEnvelope``."""
    if not isinstance(raw, (str, bytes)):
        raise InvalidEnvelope(f"stored envelope is {type(raw).__name__}, not JSON text")
    envelope = Envelope.from_json(raw)
    if envelope.queue != queue:
        envelope = envelope.replace(queue=queue)
    return envelope


def placeholder(row_id: int, msg_id: Any, queue: str, raw: Any, error: Exception) -> Envelope:
    """The stand-in envelope of a row that does not decode (see the module docstring)."""
    ident = msg_id if isinstance(msg_id, str) and msg_id and len(msg_id) <= ID_MAX_LENGTH else f"sqlite-row-{row_id}"
    try:
        queue = validate_name(queue)
    except InvalidName:
        queue = "default"
    meta = {"raw": _text(raw)[:RAW_KEEP_CHARS], "error": str(error), "row_id": row_id}
    return Envelope(name=INVALID_NAME, id=ident, queue=queue, meta=meta)


def decode_or_placeholder(row_id: int, msg_id: Any, queue: str, raw: Any) -> tuple[Envelope, str | None]:
    """``(envelope, None)`` or ``(placeholder, error text)``."""
    try:
        return decode_job(raw, queue), None
    except InvalidEnvelope as exc:
        return placeholder(row_id, msg_id, queue, raw, exc), str(exc)


def dead_entry(row: tuple[Any, ...], queue: str) -> DeadLetterEntry:
    """A ``dead_letters`` row ``(id, envelope, reason, meta, dead_at)`` as an entry."""
    row_id, raw, reason, meta_text, dead_at = row
    envelope, _ = decode_or_placeholder(row_id, None, queue, raw)
    try:
        meta = json.loads(meta_text) if meta_text else {}
    except ValueError:
        meta = {"raw": _text(meta_text)[:RAW_KEEP_CHARS]}
    if not isinstance(meta, dict):
        meta = {"value": meta}
    moment_at = moment(dead_at)
    assert moment_at is not None
    return DeadLetterEntry(envelope=envelope, reason=str(reason), meta=meta, dead_at=moment_at)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


__all__ = [
    "INVALID_NAME",
    "INVALID_REASON",
    "RAW_KEEP_CHARS",
    "dead_entry",
    "decode_job",
    "decode_or_placeholder",
    "dumps",
    "job_params",
    "moment",
    "placeholder",
]
