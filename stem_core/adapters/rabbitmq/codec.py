"""Envelopes to AMQP messages and back. Nothing here talks to the server.

A message's body is the envelope's JSON (the wire format every Stem speaks); the AMQP
properties repeat what RabbitMQ itself acts on: ``delivery_mode`` 2 (persistent) and
``priority``. Stem's own headers:

* ``x-stem-deliveries``: how many times the message was handed out before Stem itself
  re-published it (a nack, a requeue, an expired lease); the next delivery counts one
  more, and one more again when RabbitMQ redelivers it (its ``redelivered`` flag).
* ``x-stem-rank``: POSIX us when a re-published message joined the back of its queue;
  a multi-queue subscription ranks equal priorities by it (else by ``ready_at``), the
  same age AMQP's queue order gives it.
* dead letters: ``x-stem-reason``, ``x-stem-meta`` (JSON text) and ``x-stem-dead-at``.

``decode`` never raises: a body that is not an envelope becomes the ``<invalid>``
placeholder, which the consumer dead-letters as ``invalid-envelope``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pamqp.commands import Basic

from ...clock import parse_iso, to_iso
from ...contract.types import DeadLetterEntry
from ...envelope import Envelope
from ...errors import InvalidEnvelope

H_DELIVERIES = "x-stem-deliveries"
H_RANK = "x-stem-rank"
H_REASON = "x-stem-reason"
H_META = "x-stem-meta"
H_DEAD_AT = "x-stem-dead-at"
CONTENT_TYPE = "application/json"
PERSISTENT = 2
INVALID_NAME = "<invalid>"
INVALID_REASON = "invalid-envelope"
RAW_KEEP_CHARS = 4000
EPOCH = parse_iso("1970-01-01T00:00:00Z")


def body(envelope: Envelope) -> bytes:
    return envelope.to_json().encode()


def properties(envelope: Envelope, headers: dict[str, Any] | None = None) -> Basic.Properties:
    return Basic.Properties(delivery_mode=PERSISTENT, priority=envelope.priority, content_type=CONTENT_TYPE,
                            headers=headers or None)


def republish_headers(deliveries: int, rank_us: int | None) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if deliveries:
        headers[H_DELIVERIES] = deliveries
    if rank_us is not None:
        headers[H_RANK] = rank_us
    return headers


def header_int(headers: dict[str, Any] | None, key: str) -> int:
    value = headers.get(key) if headers else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def rank_us(envelope: Envelope, headers: dict[str, Any] | None) -> int:
    """The age a subscription orders equal priorities by (see the module docstring)."""
    ranked = header_int(headers, H_RANK)
    return ranked or to_us(envelope.ready_at)


def to_us(value: datetime) -> int:
    return round(value.timestamp() * 1_000_000)


def text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def decode(raw: bytes, fallback_id: str, queue: str) -> tuple[Envelope, bool]:
    """``(envelope, ok)``: the envelope, or the ``<invalid>`` placeholder and False."""
    try:
        return Envelope.from_json(raw), True
    except InvalidEnvelope as exc:
        return placeholder(raw, fallback_id, queue, str(exc)), False
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        return placeholder(raw, fallback_id, queue, f"undecodable envelope: {exc}"), False


def placeholder(raw: bytes | str, fallback_id: str, queue: str, error: str) -> Envelope:
    meta = {"raw": text(raw)[:RAW_KEEP_CHARS], "error": error}
    return Envelope(name=INVALID_NAME, id=fallback_id, queue=queue, meta=meta)


def dead_headers(reason: str, meta: dict[str, Any], dead_at: datetime) -> dict[str, Any]:
    """``ValueError`` when ``meta`` is not JSON (raised before anything is sent)."""
    try:
        meta_text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"dead-letter meta is not JSON: {exc}") from None
    return {H_REASON: reason, H_META: meta_text, H_DEAD_AT: to_iso(dead_at)}


def dead_entry(raw: bytes, headers: dict[str, Any] | None, queue: str, fallback_id: str) -> DeadLetterEntry:
    """A stored dead letter; a damaged one comes back with the placeholder envelope."""
    envelope, _ = decode(raw, fallback_id, queue)
    headers = headers or {}
    reason = headers.get(H_REASON)
    try:
        meta = json.loads(headers.get(H_META) or "{}")
        dead_at = parse_iso(headers[H_DEAD_AT]) if headers.get(H_DEAD_AT) else EPOCH
    except (TypeError, ValueError, RecursionError):
        meta, dead_at = {}, EPOCH
    if not isinstance(meta, dict):
        meta = {"value": meta}
    return DeadLetterEntry(envelope=envelope, reason=str(reason) if reason else INVALID_REASON, meta=meta, dead_at=dead_at)


__all__ = [
    "CONTENT_TYPE", "H_DEAD_AT", "H_DELIVERIES", "H_META", "H_RANK", "H_REASON", "INVALID_NAME", "INVALID_REASON",
    "body", "dead_entry", "dead_headers", "decode", "header_int", "placeholder", "properties", "rank_us",
    "republish_headers", "text", "to_us",
]
