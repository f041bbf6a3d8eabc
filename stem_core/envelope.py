"""The envelope: Stem's wire format, shared byte-for-byte with the original Dart Stem.

``Envelope.to_json()`` always writes the same 12 camelCase keys; ``from_json`` fills
defaults for missing keys and raises ``InvalidEnvelope`` for anything else that is wrong.
Durations are seconds (float) in Python and integer milliseconds on the wire.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from collections.abc import Mapping
from typing import Any

from .clock import UTC, parse_iso, to_iso, utcnow
from .errors import EnvelopeTooLarge, InvalidEnvelope, InvalidName
from .limits import ID_MAX_LENGTH, MAX_ATTEMPT, MAX_DURATION_SECONDS, MAX_RETRIES, NAME_MAX_LENGTH, check_task_name

MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_QUEUE = "default"

_NAME_RE = re.compile(r"[A-Za-z0-9._:\-]{1,%d}" % NAME_MAX_LENGTH)

JSON_KEYS = (
    "id",
    "name",
    "args",
    "headers",
    "enqueuedAt",
    "notBefore",
    "priority",
    "attempt",
    "maxRetries",
    "visibilityTimeout",
    "queue",
    "meta",
)


def validate_name(name: object, *, kind: str = "queue") -> str:
    """Return ``name`` if it is a legal queue or channel name, else raise ``InvalidName``.

    Legal: 1-200 characters of ASCII letters, digits and ``._-:``. Checked before a name
    reaches a Redis key, a SQL statement or a file, so no name can address another
    queue's storage.
    """
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        shown = repr(name)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise InvalidName(
            f"invalid {kind} name {shown}: use 1-{NAME_MAX_LENGTH} characters of letters, digits and . _ - :"
        )
    return name


_last_v7_ms = 0
_last_v7_seq = 0


def uuid7() -> str:
    """A new UUID v7 (RFC 9562) as the 36-character string: time ordered, monotonic per process."""
    global _last_v7_ms, _last_v7_seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_v7_ms:
        # Same (or earlier) millisecond: bump a 12-bit counter so ids stay ordered.
        _last_v7_seq += 1
        if _last_v7_seq > 0xFFF:
            _last_v7_ms += 1
            _last_v7_seq = 0
        ms = _last_v7_ms
        rand = int.from_bytes(os.urandom(8), "big")
    else:
        _last_v7_ms = ms
        rand = int.from_bytes(os.urandom(10), "big")
        _last_v7_seq = (rand >> 64) & 0x3FF
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (_last_v7_seq & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"  # str(uuid.UUID(int=value)) without the UUID object (it runs per enqueue)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _check_json_map(value: object, label: str) -> dict[str, Any]:
    if type(value) is dict and not value:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEnvelope(f"envelope {label} must be a JSON object, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidEnvelope(f"envelope {label} keys must be strings, got {key!r}")
    return dict(value)


def _check_int(value: object, label: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEnvelope(f"envelope {label} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidEnvelope(f"envelope {label} must be {bounds}, got {value}")
    return value


def _check_time(value: object, label: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidEnvelope(f"envelope {label} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidEnvelope(f"envelope {label} must be timezone-aware (UTC)")
    return value.astimezone(UTC)


# ``ignore_result=True`` (per task or per app, as in Celery) travels as this header, set by
# the producer: no queued, running or succeeded status is stored for such a task (failures,
# retries, cancellations and dead letters still are), so every process agrees on it.
IGNORE_RESULT_HEADER = "stem-ignore-result"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One task message. Immutable: use ``replace()`` to derive a changed copy.

    ``priority`` is 0..9 (higher first); ``attempt`` counts from 0; ``visibility_timeout``
    is the lease length in seconds (None = the broker's default).
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=uuid7)
    headers: dict[str, str] = field(default_factory=dict)
    enqueued_at: datetime = field(default_factory=utcnow)
    not_before: datetime | None = None
    priority: int = 0
    attempt: int = 0
    max_retries: int = 0
    visibility_timeout: float | None = None
    queue: str = DEFAULT_QUEUE
    meta: dict[str, Any] = field(default_factory=dict)
    # to_json()'s text, kept after the first call (an envelope is encoded on its way
    # through validation, the status write and the publish). Not a wire key.
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            check_task_name(self.name)  # the one task-name rule (limits), not a copy of it here
        except ValueError as exc:
            raise InvalidEnvelope(f"envelope {exc}") from None
        if not isinstance(self.id, str) or not self.id or len(self.id) > ID_MAX_LENGTH:
            shown = repr(self.id) if not isinstance(self.id, str) or len(self.id) <= 60 else repr(self.id[:57]) + "..."
            raise InvalidEnvelope(f"envelope id must be a non-empty string of at most {ID_MAX_LENGTH} characters, got {shown}")
        object.__setattr__(self, "args", _check_json_map(self.args, "args"))
        headers = _check_json_map(self.headers, "headers")
        for key, val in headers.items():
            if not isinstance(val, str):
                raise InvalidEnvelope(f"envelope header {key!r} must be a string, got {type(val).__name__}")
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "meta", _check_json_map(self.meta, "meta"))
        object.__setattr__(self, "enqueued_at", _check_time(self.enqueued_at, "enqueued_at"))
        if self.not_before is not None:
            object.__setattr__(self, "not_before", _check_time(self.not_before, "not_before"))
        _check_int(self.priority, "priority", MIN_PRIORITY, MAX_PRIORITY)
        _check_int(self.attempt, "attempt", 0, MAX_ATTEMPT)
        _check_int(self.max_retries, "max_retries", 0, MAX_RETRIES)
        vt = self.visibility_timeout
        if vt is not None:
            if isinstance(vt, bool) or not isinstance(vt, (int, float)) or not 0 < vt <= MAX_DURATION_SECONDS:
                raise InvalidEnvelope("envelope visibility_timeout must be a positive number of seconds, at most 10 years, "
                                      f"got {vt!r}")
            object.__setattr__(self, "visibility_timeout", float(vt))
        try:
            validate_name(self.queue)
        except InvalidName as exc:
            raise InvalidEnvelope(str(exc)) from None

    @property
    def ignores_result(self) -> bool:
        """True when the producer asked for no queued/running/succeeded statuses."""
        return self.headers.get(IGNORE_RESULT_HEADER) == "true"

    # -- derived copies -------------------------------------------------------------

    def replace(self, **changes: Any) -> "Envelope":
        """A copy with ``changes`` applied (validated like a new envelope)."""
        return replace(self, **changes)

    @property
    def ready_at(self) -> datetime:
        """When the message is (or becomes) ready: ``max(enqueued_at, not_before)``, the
        age that orders a queue's messages of equal priority."""
        nb = self.not_before
        return nb if nb is not None and nb > self.enqueued_at else self.enqueued_at

    def is_due(self, now: datetime | None = None) -> bool:
        """True when ``not_before`` is unset or not in the future."""
        return self.not_before is None or self.not_before <= (now or utcnow())

    # -- codec ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The 12 wire keys with JSON-ready values."""
        vt = self.visibility_timeout
        return {
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "headers": self.headers,
            "enqueuedAt": to_iso(self.enqueued_at),
            "notBefore": to_iso(self.not_before) if self.not_before is not None else None,
            "priority": self.priority,
            "attempt": self.attempt,
            "maxRetries": self.max_retries,
            "visibilityTimeout": int(round(vt * 1000)) if vt is not None else None,
            "queue": self.queue,
            "meta": self.meta,
        }

    def check_size(self, max_bytes: int) -> None:
        """Raise ``EnvelopeTooLarge`` when the encoded envelope (UTF-8 JSON) is larger
        than ``max_bytes``. Cheap for the usual small envelope: a character is at most
        four bytes, so only a long text is encoded to count."""
        text = self.to_json()
        if len(text) * 4 <= max_bytes:
            return
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > max_bytes:
            raise EnvelopeTooLarge(
                f"envelope {self.id} ({self.name[:60]!r}) is {size} bytes encoded, more than the {max_bytes} allowed "
                "(STEM_MAX_ENVELOPE_BYTES): keep large data elsewhere and pass a reference"
            )

    def to_json(self) -> str:
        """Compact JSON with all 12 keys. Raises ``InvalidEnvelope`` if args/meta are not JSON."""
        text = self._json
        if text is None:
            try:
                text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidEnvelope(f"envelope {self.id} is not JSON-serialisable: {exc}") from None
            except RecursionError:
                raise InvalidEnvelope(f"envelope {self.id} is not JSON-serialisable: nested too deeply") from None
            object.__setattr__(self, "_json", text)
        return text

    @classmethod
    def from_json(cls, data: str | bytes | bytearray) -> "Envelope":
        """Decode the wire format; raises ``InvalidEnvelope`` for anything malformed."""
        try:
            decoded = json.loads(data)
        except (TypeError, ValueError) as exc:
            raise InvalidEnvelope(f"envelope is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidEnvelope("envelope is not valid JSON: nested too deeply") from None
        return cls.from_dict(decoded)

    @classmethod
    def from_dict(cls, data: object) -> "Envelope":
        """Build from a decoded wire dict (camelCase keys); missing keys take defaults."""
        if not isinstance(data, dict):
            raise InvalidEnvelope(f"envelope must be a JSON object, got {type(data).__name__}")
        if "name" not in data:
            raise InvalidEnvelope("envelope has no 'name'")
        kwargs: dict[str, Any] = {"name": data["name"]}
        if data.get("id") is not None:
            kwargs["id"] = data["id"]
        for key, attr in (("args", "args"), ("headers", "headers"), ("meta", "meta")):
            if data.get(key) is not None:
                kwargs[attr] = data[key]
        for key, attr in (("priority", "priority"), ("attempt", "attempt"), ("maxRetries", "max_retries")):
            if data.get(key) is not None:
                kwargs[attr] = data[key]
        if data.get("queue") is not None:
            kwargs["queue"] = data["queue"]
        for key, attr in (("enqueuedAt", "enqueued_at"), ("notBefore", "not_before")):
            raw = data.get(key)
            if raw is not None:
                try:
                    kwargs[attr] = parse_iso(raw)
                except ValueError as exc:
                    raise InvalidEnvelope(f"envelope {key}: {exc}") from None
        vt = data.get("visibilityTimeout")
        if vt is not None:
            if isinstance(vt, bool) or not isinstance(vt, (int, float)):
                raise InvalidEnvelope(f"envelope visibilityTimeout must be integer milliseconds, got {vt!r}")
            if vt > 0:
                kwargs["visibility_timeout"] = vt / 1000.0
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One handed-out message: the envelope plus what the broker needs to settle it.

    ``receipt`` is opaque and broker specific; it also fences: once the message is
    redelivered or requeued, an old receipt settles nothing. ``channel`` is set for
    broadcast deliveries (which have no lease). ``delivery_count`` starts at 1.
    """

    envelope: Envelope
    receipt: str
    queue: str
    lease_expires_at: datetime | None = None
    channel: str | None = None
    delivery_count: int = 1

    @property
    def is_broadcast(self) -> bool:
        return self.channel is not None


def delay_to_not_before(delay: float | timedelta | None, *, now: datetime | None = None) -> datetime | None:
    """``now + delay`` (seconds or timedelta), None for no delay or a non-positive one."""
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds <= 0:
        return None
    if not seconds <= MAX_DURATION_SECONDS:
        raise ValueError(f"delay must be at most 10 years ({MAX_DURATION_SECONDS:g} s), got {delay!r}")
    return (now or utcnow()) + timedelta(seconds=seconds)


__all__ = [
    "DEFAULT_QUEUE",
    "Delivery",
    "Envelope",
    "IGNORE_RESULT_HEADER",
    "JSON_KEYS",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "NAME_MAX_LENGTH",
    "delay_to_not_before",
    "uuid7",
    "validate_name",
]
