"""Envelopes to script arguments, script replies back to Stem values, and receipts.

Nothing here talks to Redis. ``decode`` never raises: an entry another program wrote
with a malformed envelope becomes the ``<invalid>`` placeholder the broker dead-letters
as ``invalid-envelope`` (a poison message never blocks a queue).
"""

from __future__ import annotations

import json
import re
from ...clock import parse_iso
from ...contract.types import DeadLetterEntry
from ...envelope import Envelope
from ...errors import InvalidEnvelope
from .keys import to_us

INVALID_NAME = "<invalid>"
INVALID_REASON = "invalid-envelope"
# The raw text kept in a placeholder's meta is cut to this many characters.
RAW_KEEP_CHARS = 4000
RECEIPT_SEP = "|"


def lease_ms(envelope: Envelope) -> int:
    """The envelope's own lease in ms, 0 for the broker default."""
    vt = envelope.visibility_timeout
    return max(1, int(round(vt * 1000))) if vt is not None else 0


def ready_us(envelope: Envelope) -> int:
    """``Envelope.ready_at`` in POSIX us (the age order)."""
    return to_us(envelope.ready_at)


def due_us(envelope: Envelope) -> int:
    return to_us(envelope.not_before) if envelope.not_before is not None else 0


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode(raw: bytes | str, fallback_id: str, queue: str) -> tuple[Envelope, bool]:
    """``(envelope, ok)``: the stored envelope, or the ``<invalid>`` placeholder and False."""
    try:
        return Envelope.from_json(raw), True
    except InvalidEnvelope as exc:
        return placeholder(raw, fallback_id, queue, str(exc)), False
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        return placeholder(raw, fallback_id, queue, f"undecodable envelope: {exc}"), False


def placeholder(raw: bytes | str, fallback_id: str, queue: str, error: str) -> Envelope:
    meta = {"raw": text(raw)[:RAW_KEEP_CHARS], "error": error}
    try:
        return Envelope(name=INVALID_NAME, id=fallback_id, queue=queue, meta=meta)
    except InvalidEnvelope:
        return Envelope(name=INVALID_NAME, id=fallback_id, meta={**meta, "queue": queue})


# lib.lua's lid: "<band><lane>:<entry id>", lane s (band stream) or p (P:p).
_LID_RE = re.compile(r"[0-9][sp]:[0-9]+-[0-9]+")


def receipt(queue: str, lid: str, token: int) -> str:
    """``<queue>|<lid>|<token>``: queue names cannot contain ``|``."""
    return f"{queue}{RECEIPT_SEP}{lid}{RECEIPT_SEP}{token}"


def parse_receipt(value: str) -> tuple[str, str, str] | None:
    """``(queue, lid, token)``, or None for anything else (a stale no-op)."""
    parts = value.split(RECEIPT_SEP)
    if len(parts) != 3 or not parts[0] or not parts[2].isdigit() or _LID_RE.fullmatch(parts[1]) is None:
        return None
    return parts[0], parts[1], parts[2]


def dumps(value: object) -> str:
    """Compact JSON, non-ASCII kept as is (what every stored value is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dead_letter_json(entry: DeadLetterEntry) -> str:
    return dumps(entry.to_dict())


def decode_dead_letter(raw: bytes | str, queue: str) -> DeadLetterEntry:
    """A stored dead letter; a damaged one comes back with the placeholder envelope."""
    try:
        data = json.loads(raw)
        return DeadLetterEntry(envelope=Envelope.from_dict(data["envelope"]), reason=str(data["reason"]), meta=dict(data.get("meta") or {}),
                               dead_at=parse_iso(data["dead_at"]))
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        envelope = placeholder(raw, "?", queue, f"undecodable dead letter: {exc}")
        return DeadLetterEntry(envelope=envelope, reason=INVALID_REASON, meta={}, dead_at=parse_iso("1970-01-01T00:00:00Z"))


__all__ = [
    "INVALID_NAME", "INVALID_REASON", "dead_letter_json", "decode", "decode_dead_letter", "due_us", "dumps", "lease_ms",
    "parse_receipt", "placeholder", "ready_us", "receipt", "text",
]
