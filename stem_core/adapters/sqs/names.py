"""Where Stem's queues and channels live in SQS and SNS: the naming layout.

With ``B = <prefix><escaped namespace>-``::

    B<queue>-p<N>    priority band N (0..9) of a Stem queue: one SQS queue per priority in use
    B<queue>-dead    the dead letters of a Stem queue
    B_s<token>       one broadcast subscriber (an SQS queue per ``consume`` with channels)
    B_t<channel>     the SNS topic of a broadcast channel

Escaping maps Stem's name characters ``[A-Za-z0-9._:-]`` onto SQS's ``[A-Za-z0-9_-]``
reversibly and without ``-`` (``_`` -> ``__``, ``-`` -> ``_h``, ``.`` -> ``_d``, ``:`` ->
``_c``), so ``-`` only ever separates: listing ``B`` finds exactly one namespace, listing
``B<queue>-`` exactly one Stem queue. A part that would push a name past SQS's 80
characters becomes ``_x`` + 16 hex digits of its SHA-256 (escaping never yields ``_x``);
such a queue carries its Stem name in the ``stem-queue`` tag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAX_QUEUE_NAME_CHARS = 80
MAX_TOPIC_NAME_CHARS = 256
# The escaped namespace keeps at most this many characters before it is hashed, so every
# Stem queue name of up to ~25 characters fits any namespace and prefix unhashed.
NAMESPACE_MAX_CHARS = 32
HASH_HEX_CHARS = 16
BANDS = tuple(range(10))
DEAD_KIND = "dead"
BAND_KINDS = tuple(f"p{band}" for band in BANDS)
KINDS = frozenset((*BAND_KINDS, DEAD_KIND))
TAG_QUEUE = "stem-queue"
TAG_SEEN = "stem-seen"
_HASHED = "_x"
_SUBSCRIBER = "_s"
_TOPIC = "_t"

_ESCAPES = {"_": "__", "-": "_h", ".": "_d", ":": "_c"}
_UNESCAPES = {"_": "_", "h": "-", "d": ".", "c": ":"}


def escape(name: str) -> str:
    """Stem name -> SQS-safe text without ``-`` (reversible)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in name)


def unescape(text: str) -> str | None:
    """The inverse of ``escape``; None when ``text`` is not an escaped name."""
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "-":
            return None
        if ch != "_":
            out.append(ch)
            continue
        code = next(chars, "")
        if code not in _UNESCAPES:
            return None
        out.append(_UNESCAPES[code])
    return "".join(out) or None


def hashed(name: str) -> str:
    return _HASHED + hashlib.sha256(name.encode()).hexdigest()[:HASH_HEX_CHARS]


def band_kind(priority: int) -> str:
    return BAND_KINDS[priority]


@dataclass(frozen=True, slots=True)
class Parsed:
    """One SQS queue name of this namespace: a Stem queue's band or dead queue (``queue``
    is None when the name is hashed: read the ``stem-queue`` tag), or a subscriber."""

    kind: str
    queue: str | None = None
    part: str = ""

    @property
    def band(self) -> int | None:
        return int(self.kind[1:]) if self.kind in BAND_KINDS else None


class SQSNames:
    """The names of one (prefix, namespace)."""

    def __init__(self, prefix: str, namespace: str) -> None:
        ns = escape(namespace)
        self.base = f"{prefix}{ns if len(ns) <= NAMESPACE_MAX_CHARS else hashed(namespace)}-"

    def part(self, queue: str) -> str:
        """The Stem queue's part of its SQS names (hashed when it would not fit)."""
        text = escape(queue)
        longest = len(self.base) + len(text) + 1 + len(DEAD_KIND)
        return text if longest <= MAX_QUEUE_NAME_CHARS and not text.startswith(_HASHED) else hashed(queue)

    def queue(self, queue: str, kind: str) -> str:
        return f"{self.base}{self.part(queue)}-{kind}"

    def is_hashed(self, queue: str) -> bool:
        return self.part(queue).startswith(_HASHED)

    def subscriber(self, token: str) -> str:
        return f"{self.base}{_SUBSCRIBER}{token}"

    @property
    def subscriber_prefix(self) -> str:
        return self.base + _SUBSCRIBER

    def topic(self, channel: str) -> str:
        text = escape(channel)
        if len(self.base) + len(_TOPIC) + len(text) > MAX_TOPIC_NAME_CHARS:
            text = hashed(channel)
        return f"{self.base}{_TOPIC}{text}"

    def parse(self, name: str) -> Parsed | None:
        """What an SQS queue name of this namespace is; None for anything else."""
        if not name.startswith(self.base):
            return None
        rest = name[len(self.base):]
        if rest.startswith(_SUBSCRIBER):
            return Parsed(kind="subscriber", part=rest)
        part, sep, kind = rest.rpartition("-")
        if not sep or kind not in KINDS or not part:
            return None
        if part.startswith(_HASHED):
            return Parsed(kind=kind, queue=None, part=part)
        queue = unescape(part)
        return Parsed(kind=kind, queue=queue, part=part) if queue is not None else None


__all__ = ["BANDS", "BAND_KINDS", "DEAD_KIND", "KINDS", "Parsed", "SQSNames", "TAG_QUEUE", "TAG_SEEN", "band_kind",
           "escape", "unescape"]
