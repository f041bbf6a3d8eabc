"""The verdict of one queue: a word an operator can act on, and the sentence behind it.

Every verdict is a fact about the queue now, never a difference of two counts read at
different times. Rules, first match wins (``docs/ops.md`` has the table and the reasons):

==========  =================================================================================
paused      a pause record covers every worker of the queue
idle        nothing queued, delayed or in flight, and no traffic in the rate window
unknown     (empty, no traffic) nothing queued or delayed, but the broker cannot count in-flight
steady      (empty but flowing) nothing waiting, yet tasks went in or out in the window
scheduled   only delayed messages, no traffic
no-workers  messages wait and no live worker consumes the queue
unknown     messages wait and there is no second sample yet (no rates)
stalled     messages wait, nothing finished for ``STALLED_AFTER_S``, the oldest keeps ageing
busy        nothing waiting, some in flight, none finished in the window
growing     the pending backlog grew by more than noise over the trend window, and still grows
draining    it shrank by more than noise over the trend window, and still shrinks
steady      anything else: in ~ out
==========  =================================================================================

``VerdictMemory`` adds hysteresis for the three flow verdicts (growing, draining, steady):
a long-lived ``Ops`` (the TUI, ``--watch``) shows a new one only once two readings in a row
agree, so the word does not flip on one noisy sample. The facts (paused, no workers, idle,
stalled) show at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import text
from .rates import Rates

# Below this net rate (messages per second, about 3 a minute) a queue counts as flat.
GROWTH_EPSILON_PER_S = 0.05
# A backlog change smaller than this many messages, or this share of the backlog, is noise
# (workers claim in batches of their prefetch, so the pending count jitters by that much).
GROWTH_MIN_MESSAGES = 5
GROWTH_MIN_SHARE = 0.02
# Nothing finished for at least this long, with messages waiting and ageing: stalled.
STALLED_AFTER_S = 10.0
# Slow growth (or drain) is read over the whole rate window once it spans this long.
LONG_TREND_MIN_SPAN_S = 30.0
# ... and only when one side of the flow outweighs the other by this factor: a busy queue
# whose in and out rates differ by a few per cent is steady, whatever its pending count did.
LONG_TREND_FLOW_RATIO = 1.25
# The flow verdicts change only when this many readings in a row agree.
HYSTERESIS_READINGS = 2
FLOW_CODES = frozenset({"growing", "draining", "steady"})


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
    inflight_known = inflight is not None
    inflight = inflight or 0
    depth = pending + delayed + inflight
    backlog = pending + inflight
    if pause is not None:
        who = pause.get("by") or "someone"
        why = pause.get("reason") or "no reason given"
        until = f" until {pause['until']}" if pause.get("until") else ""
        return Verdict("paused", f"paused by {who}: {why}{until}")
    flowing = _traffic(rates)
    if backlog == 0:
        if flowing is not None:
            return Verdict("steady", f"steady (keeping up, {text.rate(flowing)})")
        if depth == 0 and not inflight_known:
            return Verdict("unknown", "nothing waiting (in flight n/a: needs the management API)")
        if depth == 0:
            return Verdict("idle", "idle")
        return Verdict("scheduled", f"scheduled ({text.count(delayed)} delayed)")
    if serving == 0:
        return Verdict("no-workers", f"no workers ({text.count(backlog)} waiting)")
    if rates is None:
        return Verdict("unknown", f"backlog {text.count(backlog)} (rates after a second sample)")
    nothing_done = rates.completions is not None and rates.completions == 0
    ageing = oldest_age is not None and (rates.age_before is None or oldest_age > rates.age_before)
    if nothing_done and pending > 0 and ageing and rates.span >= STALLED_AFTER_S:
        return Verdict(
            "stalled",
            f"stalled (nothing done in {text.duration(rates.span)}, oldest {text.duration(oldest_age or 0.0)})",
        )
    if nothing_done and pending == 0:
        return Verdict("busy", f"busy ({text.count(inflight)} in flight, none finished in {text.duration(rates.span)})")
    trend = _trend(rates, pending)
    if trend > 0:
        return Verdict("growing", f"growing (+{text.rate(trend)})")
    if trend < 0:
        eta = backlog / -trend
        return Verdict("draining", f"draining (empties in ~{text.duration(eta)})", eta_seconds=eta)
    if rates.out_rate:
        return Verdict("steady", f"steady (in ~ out, {text.rate(rates.out_rate)})")
    return Verdict("steady", "steady (backlog flat)")


def _traffic(rates: Rates | None) -> float | None:
    """Tasks per second that went in or out over the window, or None when there was none."""
    if rates is None:
        return None
    flow = max(rates.in_rate or 0.0, rates.out_rate or 0.0)
    return flow if flow > 0 else None


def _trend(rates: Rates, pending: int) -> float:
    """The pending backlog's rate of change when it is more than noise and still going the
    same way at the last reading; 0.0 when flat. Without trend readings (one earlier sample
    only) the window's net rate stands in."""
    if rates.backlog_change is None or not rates.trend_span:
        net = rates.net_rate or 0.0
        return net if abs(net) > GROWTH_EPSILON_PER_S else 0.0
    change = rates.backlog_change
    noise = max(GROWTH_MIN_MESSAGES, GROWTH_MIN_SHARE * max(pending, pending - change))
    per_second = change / rates.trend_span
    last = rates.last_change or 0
    turned = (change > 0 and last < 0) or (change < 0 and last > 0)
    if abs(change) >= noise and abs(per_second) > GROWTH_EPSILON_PER_S and not turned:
        return per_second
    # Slow and steady: under the noise floor in the short window, but the whole window
    # moved by more than noise, the short window points the same way, and the flow agrees
    # (more in than out for growth, more out than in for a drain).
    whole = rates.window_change
    if whole is None or rates.span < LONG_TREND_MIN_SPAN_S or abs(whole) < noise:
        return 0.0
    inflow, outflow = rates.in_rate, rates.out_rate
    if inflow is None or outflow is None:
        return 0.0
    if whole > 0 and change > 0 and inflow > outflow * LONG_TREND_FLOW_RATIO:
        return whole / rates.span
    if whole < 0 and change < 0 and outflow > inflow * LONG_TREND_FLOW_RATIO:
        return whole / rates.span
    return 0.0


class VerdictMemory:
    """The verdict last shown per queue, for hysteresis (one per long-lived ``Ops``)."""

    def __init__(self, readings: int = HYSTERESIS_READINGS) -> None:
        self.readings = readings
        self._shown: dict[str, Verdict] = {}
        self._candidate: dict[str, tuple[str, int]] = {}

    def settle(self, queue: str, verdict: Verdict, *, pending: int) -> Verdict:
        """The verdict to show for ``queue`` now that ``verdict`` was computed from a reading
        with ``pending`` messages waiting. A backlog verdict is never held over an empty
        queue: with nothing pending, "growing" or "draining" would contradict the row."""
        shown = self._shown.get(queue)
        emptied = pending == 0 and shown is not None and shown.code in ("growing", "draining")
        if (shown is None or emptied or verdict.code == shown.code
                or not (verdict.code in FLOW_CODES and shown.code in FLOW_CODES)):
            self._candidate.pop(queue, None)
            self._shown[queue] = verdict
            return verdict
        code, seen = self._candidate.get(queue, (verdict.code, 0))
        seen = seen + 1 if code == verdict.code else 1
        if seen >= self.readings:
            self._candidate.pop(queue, None)
            self._shown[queue] = verdict
            return verdict
        self._candidate[queue] = (verdict.code, seen)
        return shown


__all__ = [
    "FLOW_CODES",
    "GROWTH_EPSILON_PER_S",
    "GROWTH_MIN_MESSAGES",
    "GROWTH_MIN_SHARE",
    "HYSTERESIS_READINGS",
    "STALLED_AFTER_S",
    "Verdict",
    "VerdictMemory",
    "queue_verdict",
]
