"""SQS messages <-> envelopes: body, message attributes, delays and the size limit.

The body is the envelope's wire JSON, ASCII only (``\\uXXXX`` escapes), because SQS
rejects some code points JSON allows (U+FFFE, U+FFFF). Stem's bookkeeping travels as
message attributes, never in the body, so the body stays the shared wire format:

* ``stem-deliveries`` (Number): deliveries made before this SQS message existed (a
  redelivered or handed-back message is re-sent as a new SQS message, whose own receive
  count starts again at 1);
* ``stem-channel`` (String): the broadcast channel (set on the SNS publish, passed on by
  raw delivery);
* ``stem-reason``, ``stem-meta`` (JSON), ``stem-dead-at`` (ISO time): a dead letter's why
  and when.

SQS counts attribute names, types and values towards its 1 MiB message limit (and SNS
towards 256 KiB), so the size is checked here, before anything is sent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...clock import utcnow
from ...envelope import Envelope
from ...errors import InvalidEnvelope

ATTR_DELIVERIES = "stem-deliveries"
ATTR_CHANNEL = "stem-channel"
ATTR_REASON = "stem-reason"
ATTR_META = "stem-meta"
ATTR_DEAD_AT = "stem-dead-at"
MAX_MESSAGE_BYTES = 1_048_576
MAX_BROADCAST_BYTES = 262_144
# SQS holds a message back at most 15 min; longer delays are re-sent until due.
MAX_DELAY_S = 900
MAX_BATCH_ENTRIES = 10
RECEIVE_COUNT = "ApproximateReceiveCount"


def body_of(envelope: Envelope) -> str:
    """The envelope's wire JSON with only ASCII characters (raises ``InvalidEnvelope``)."""
    text = envelope.to_json()
    if text.isascii():
        return text
    return json.dumps(envelope.to_dict(), separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def delay_until(not_before: datetime | None, now: datetime | None = None) -> int:
    """Whole seconds (rounded up, so never early) until ``not_before``, at most 15 min."""
    if not_before is None:
        return 0
    seconds = (not_before - (now or utcnow())).total_seconds()
    return 0 if seconds <= 0 else min(MAX_DELAY_S, math.ceil(seconds))


def string_attr(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def number_attr(value: int) -> dict[str, str]:
    return {"DataType": "Number", "StringValue": str(value)}


def attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    return sum(len(k.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
               for k, v in attributes.items())


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready for ``SendMessageBatch`` (``size`` counts what SQS counts)."""

    body: str
    attributes: dict[str, dict[str, str]]
    delay: int
    size: int

    def entry(self, entry_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": self.body}
        if self.delay:
            entry["DelaySeconds"] = self.delay
        if self.attributes:
            entry["MessageAttributes"] = self.attributes
        return entry


def outgoing(envelope: Envelope, *, deliveries: int = 0, extra: dict[str, str] | None = None,
             delay: int | None = None, limit: int = MAX_MESSAGE_BYTES) -> Outgoing:
    """``envelope`` as an SQS message; ``InvalidEnvelope`` when it is over ``limit`` bytes."""
    body = body_of(envelope)
    attributes: dict[str, dict[str, str]] = {}
    if deliveries:
        attributes[ATTR_DELIVERIES] = number_attr(deliveries)
    for name, value in (extra or {}).items():
        attributes[name] = string_attr(value)
    size = len(body.encode()) + attributes_size(attributes)
    if size > limit:
        where = "an SNS broadcast" if limit == MAX_BROADCAST_BYTES else "an SQS message"
        raise InvalidEnvelope(
            f"task {envelope.id} ({envelope.name}) is {size:,} bytes as {where}, over the limit of {limit:,} "
            f"bytes ({limit // 1024} KiB): keep large data elsewhere and pass a reference"
        )
    return Outgoing(body, attributes, delay_until(envelope.not_before) if delay is None else delay, size)


@dataclass(frozen=True, slots=True)
class Received:
    """One received SQS message; ``envelope`` is None (and ``problem`` says why) when the
    body is not a Stem envelope."""

    message_id: str
    handle: str
    body: str
    attributes: dict[str, str]
    receive_count: int
    envelope: Envelope | None
    problem: str | None = None

    @property
    def base(self) -> int:
        """Deliveries made before this SQS message was sent."""
        try:
            return max(0, int(self.attributes.get(ATTR_DELIVERIES) or 0))
        except ValueError:
            return 0

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "Received":
        attributes = {k: str(v.get("StringValue", "")) for k, v in (message.get("MessageAttributes") or {}).items()}
        try:
            count = int((message.get("Attributes") or {}).get(RECEIVE_COUNT) or 1)
        except ValueError:
            count = 1
        body = str(message.get("Body") or "")
        envelope: Envelope | None = None
        problem: str | None = None
        try:
            envelope = Envelope.from_json(body)
        except InvalidEnvelope as exc:
            problem = str(exc)
        return cls(str(message.get("MessageId") or ""), str(message["ReceiptHandle"]), body, attributes, count,
                   envelope, problem)


__all__ = [
    "ATTR_CHANNEL", "ATTR_DEAD_AT", "ATTR_DELIVERIES", "ATTR_META", "ATTR_REASON", "MAX_BATCH_ENTRIES",
    "MAX_BROADCAST_BYTES", "MAX_DELAY_S", "MAX_MESSAGE_BYTES", "Outgoing", "RECEIVE_COUNT", "Received", "body_of",
    "delay_until", "number_attr", "outgoing", "string_attr",
]
