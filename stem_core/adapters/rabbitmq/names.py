"""``RabbitMQNames``: the server-side layout of one namespace, and the delay levels.

Layout (``N`` = namespace, ``Q`` = a Stem queue, ``C`` = a broadcast channel)::

    stem.N.q.Q          durable classic queue, x-max-priority 9: Q's ready messages
    stem.N.dead.Q       durable classic queue: Q's dead letters (reason, meta in headers)
    stem.N.d07.Q        durable queue, x-message-ttl 2**7 ms: one of Q's 32 delay levels
    stem.N.delay.07     topic exchange: routes on bit 7 of a delayed message's key
    stem.N.ready        topic exchange: a delayed message's last hop, to stem.N.q.Q
    stem.N.bc.C         fanout exchange: one per broadcast channel
    stem.N.sub.<token>  exclusive auto-delete queue: one subscriber's broadcast copies

A name longer than AMQP's 255 bytes keeps its prefix and replaces the Stem name by a
hash (``~`` then 40 hex digits); the Stem name is then only known to processes that
used it (the management listing skips such queues).

Delays (NServiceBus's scheme, per Stem queue): a message delayed ``D`` ms carries the
routing key ``b31.b30....b0.H`` (the 32 bits of ``D``, then ``H``, a hash of ``Q``) and
is published to ``delay.31``. Exchange ``delay.k`` sends it to queue ``dK.Q`` when bit
``k`` is 1 and on to ``delay.(k-1)`` when it is 0; queue ``dK.Q`` holds it ``2**k`` ms
and dead-letters it (routing key kept) to ``delay.(k-1)``; ``delay.0`` ends at
``ready``, which routes it to ``q.Q`` by ``H``. Every message of a level queue has the
same TTL, so expiry at the head (RabbitMQ's rule) never holds one back behind another.
The levels add up to exactly ``D``: a message is never early; it is late by one
dead-letter hop (about a millisecond) per set bit of ``D`` (at most 32), plus the time
it takes the server to notice the head expired (docs/rabbitmq.md has measurements).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

PREFIX = "stem."
AMQP_NAME_MAX = 255
# Delay levels: level k holds a message 2**k ms; together they cover 1 ms .. ~49.7 days.
LEVELS = 32
MAX_DELAY_MS = 2**LEVELS - 1
# Stem priorities 0..9 map one to one onto AMQP priorities.
MAX_PRIORITY = 9
HASH_CHARS = 16
ONE_MICROSECOND = timedelta(microseconds=1)


def _hash(name: str, chars: int) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:chars]


def delay_ms(not_before: datetime, now: datetime) -> int:
    """Whole milliseconds from ``now`` to ``not_before``, rounded up (never early), at
    most ``MAX_DELAY_MS`` (a longer wait is re-delayed when it arrives); 0 when due."""
    micros = (not_before - now) // ONE_MICROSECOND  # integers: no float rounding can make it early
    if micros <= 0:
        return 0
    return min(MAX_DELAY_MS, -(-micros // 1000))


def levels_of(ms: int) -> list[int]:
    """The delay levels a message of ``ms`` passes through (the set bits of ``ms``)."""
    return [k for k in range(LEVELS) if ms >> k & 1]


class RabbitMQNames:
    """Queue, exchange and routing-key names of one namespace (pure, cached)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = f"{PREFIX}{namespace}."
        self.ready_exchange = f"{self.prefix}ready"
        self._work: dict[str, str] = {}
        self._hashes: dict[str, str] = {}

    def _fit(self, kind: str, name: str) -> str:
        full = f"{self.prefix}{kind}.{name}"
        if len(full.encode()) <= AMQP_NAME_MAX:
            return full
        return f"{self.prefix}{kind}.~{_hash(name, 40)}"

    # -- queues ---------------------------------------------------------------------

    def work(self, queue: str) -> str:
        name = self._work.get(queue)
        if name is None:
            name = self._work[queue] = self._fit("q", queue)
        return name

    def dead(self, queue: str) -> str:
        return self._fit("dead", queue)

    def level(self, queue: str, k: int) -> str:
        return self._fit(f"d{k:02d}", queue)

    def subscriber(self, token: str) -> str:
        return f"{self.prefix}sub.{token}"

    def queue_of(self, amqp_name: str) -> str | None:
        """The Stem queue of a work queue's AMQP name (None for anything else)."""
        head = f"{self.prefix}q."
        if not amqp_name.startswith(head):
            return None
        name = amqp_name[len(head):]
        return None if name.startswith("~") or not name else name

    # -- exchanges ------------------------------------------------------------------

    def level_exchange(self, k: int) -> str:
        return f"{self.prefix}delay.{k:02d}"

    def after_level(self, k: int) -> str:
        """Where a message goes once level ``k`` is done with it."""
        return self.level_exchange(k - 1) if k > 0 else self.ready_exchange

    def broadcast(self, channel: str) -> str:
        return self._fit("bc", channel)

    # -- routing keys ---------------------------------------------------------------

    def qhash(self, queue: str) -> str:
        value = self._hashes.get(queue)
        if value is None:
            value = self._hashes[queue] = _hash(queue, HASH_CHARS)
        return value

    def delay_key(self, queue: str, ms: int) -> str:
        """``b31.….b0.H``: the bits of ``ms``, most significant first, then Q's hash."""
        return ".".join(format(ms, f"0{LEVELS}b")) + "." + self.qhash(queue)

    @staticmethod
    def pass_binding(k: int) -> str:
        """Matches keys whose bit ``k`` is 0 (``delay.k`` -> ``after_level(k)``)."""
        return "*." * (LEVELS - 1 - k) + "0.#"

    def level_binding(self, queue: str, k: int) -> str:
        """Matches ``queue``'s keys whose bit ``k`` is 1 (``delay.k`` -> ``dK.Q``)."""
        return "*." * (LEVELS - 1 - k) + "1." + "*." * k + self.qhash(queue)

    def ready_binding(self, queue: str) -> str:
        """Matches every key of ``queue`` (``ready`` -> ``q.Q``)."""
        return "*." * LEVELS + self.qhash(queue)


__all__ = ["LEVELS", "MAX_DELAY_MS", "MAX_PRIORITY", "RabbitMQNames", "delay_ms", "levels_of"]
