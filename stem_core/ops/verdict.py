"""The verdict of one queue: a word an operator can act on, and the sentence behind it.

Rules, first match wins (``docs/ops.md`` has the table): idle, scheduled, paused,
no-workers, stalled, busy, growing, draining, steady, unknown. ``depth`` counts pending,
delayed and in-flight messages, the same quantity the net rate is the derivative of, so
the drain forecast is ``depth / -net``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import text
from .rates import Rates

# Below this net rate (messages per second, about 3 a minute) a queue counts as flat.
GROWTH_EPSILON_PER_S = 0.05


@dataclass(frozen=True, slots=True)
class Verdict:
    code: str
    text: str
    eta_seconds: float | None = None


def queue_verdict(
    *,
    pending: int,
    delayed: int,
    inflight: int | None,
    oldest_age: float | None,
    pause: dict[str, Any] | None,
    serving: int,
    rates: Rates | None,
) -> Verdict:
    """Decide the verdict of one queue from its counts, pause record, serving workers and rates.
    An unknown in-flight count (None) counts as 0, except that an otherwise empty queue is
    then ``unknown``, not ``idle``: its workers may be busy."""
    if inflight is None:
        if pending + delayed == 0:
            return Verdict("unknown", "nothing waiting (in flight n/a: needs the management API)")
        inflight = 0
    depth = pending + delayed + inflight
    backlog = pending + inflight
    if depth == 0:
        return Verdict("idle", "idle")
    if backlog == 0:
        return Verdict("scheduled", f"scheduled ({text.count(delayed)} delayed)")
    if pause is not None:
        who = pause.get("by") or "someone"
        why = pause.get("reason") or "no reason given"
        until = f" until {pause['until']}" if pause.get("until") else ""
        return Verdict("paused", f"paused by {who}: {why}{until}")
    if serving == 0:
        return Verdict("no-workers", f"no workers ({text.count(backlog)} waiting)")
    if rates is None:
        return Verdict("unknown", f"backlog {text.count(backlog)} (rates after a second sample)")
    net = rates.net_rate or 0.0
    nothing_done = rates.completions is not None and rates.completions == 0
    if nothing_done and pending > 0 and oldest_age is not None and (rates.age_before is None or oldest_age > rates.age_before):
        return Verdict(
            "stalled",
            f"stalled (nothing done in {text.duration(rates.span)}, oldest {text.duration(oldest_age)})",
        )
    if nothing_done and pending == 0:
        return Verdict("busy", f"busy ({text.count(inflight)} in flight, none finished in {text.duration(rates.span)})")
    if net > GROWTH_EPSILON_PER_S:
        return Verdict("growing", f"growing (+{text.rate(net)})")
    if net < -GROWTH_EPSILON_PER_S:
        eta = depth / -net
        return Verdict("draining", f"draining (empties in ~{text.duration(eta)})", eta_seconds=eta)
    if rates.out_rate:
        return Verdict("steady", f"steady (in ~ out, {text.rate(rates.out_rate)})")
    return Verdict("steady", "steady (depth flat)")


__all__ = ["GROWTH_EPSILON_PER_S", "Verdict", "queue_verdict"]
