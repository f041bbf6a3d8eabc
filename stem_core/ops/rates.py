"""Rates from counters sampled over time, never from scanning messages.

A ``Sample`` is what one overview read: per queue the adapter's monotonic counters
(``enqueued_total`` / ``completed_total`` when it keeps them), the live depth and the age
of the oldest pending message; per worker the heartbeat ``processed`` total and its
queues. ``RateTracker`` keeps the samples of the last ``RATE_WINDOW_S`` and derives, for
one queue, between the current sample and the oldest one in the window:

* ``in``  = Δenqueued / Δt;
* ``out`` = Δcompleted / Δt, else ``in - net``, else the serving workers' Δprocessed
  shared evenly over the queues each consumes (``source = "heartbeats"``);
* ``net`` = Δdepth / Δt, always available and exact whatever the counters.

A one-shot CLI call has no history, so samples are also persisted in one backend record
(see ``docs/ops.md``): ``to_record`` / ``load_record``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable

from ..clock import parse_iso, to_iso
from ..contract import QueueStats, WorkerHeartbeat

RATE_WINDOW_S = 60.0
# The backlog trend (growing / draining) is read over this shorter, recent window: a burst
# a minute ago must not make a queue that is draining now look like it is growing.
TREND_WINDOW_S = 10.0
# Two samples closer than this give no rate (the division would amplify noise).
MIN_RATE_SPAN_S = 0.5
MAX_SAMPLES = 240
# The persisted history: this many samples at most, at least this far apart, kept this long.
PERSIST_SAMPLES = 8
PERSIST_GAP_S = 2.0
RATE_RECORD_TTL_S = 600.0
RATE_RECORD_KIND = "ops.rates"
RATE_RECORD_KEY = "samples"


@dataclass(frozen=True, slots=True)
class QueueCounters:
    """One queue at one instant."""

    enqueued: int | None
    completed: int | None
    depth: int
    pending: int
    age: float | None

    def to_list(self) -> list[Any]:
        return [self.enqueued, self.completed, self.depth, self.pending, self.age]

    @classmethod
    def from_list(cls, raw: list[Any]) -> "QueueCounters":
        enq, done, depth, pending, age = raw
        return cls(
            enqueued=None if enq is None else int(enq),
            completed=None if done is None else int(done),
            depth=int(depth),
            pending=int(pending),
            age=None if age is None else float(age),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters of every queue and worker at ``at``."""

    at: datetime
    queues: dict[str, QueueCounters]
    workers: dict[str, tuple[int, tuple[str, ...]]]

    @classmethod
    def take(cls, at: datetime, stats: Iterable[QueueStats], heartbeats: Iterable[WorkerHeartbeat]) -> "Sample":
        queues = {
            s.queue: QueueCounters(
                enqueued=s.enqueued_total,
                completed=s.completed_total,
                depth=s.pending + s.delayed + (s.inflight or 0),
                pending=s.pending,
                age=s.oldest_pending_age,
            )
            for s in stats
        }
        workers = {hb.worker_id: (hb.processed, tuple(hb.queues)) for hb in heartbeats}
        return cls(at=at, queues=queues, workers=workers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": to_iso(self.at),
            "queues": {q: c.to_list() for q, c in self.queues.items()},
            "workers": {w: [p, list(qs)] for w, (p, qs) in self.workers.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Sample":
        return cls(
            at=parse_iso(raw["at"]),
            queues={q: QueueCounters.from_list(v) for q, v in raw.get("queues", {}).items()},
            workers={w: (int(v[0]), tuple(v[1])) for w, v in raw.get("workers", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Rates:
    """Rates of one queue over ``span`` seconds; ``completions`` is how many finished in it
    (None when no counter tells), ``age_before`` the oldest age at the window's start."""

    in_rate: float | None
    out_rate: float | None
    net_rate: float | None
    span: float
    source: str | None
    completions: float | None
    age_before: float | None
    # The pending backlog's change over the recent trend window (messages, and its span in
    # seconds) and over the last step between two samples; None when too few samples.
    backlog_change: int | None = None
    trend_span: float | None = None
    last_change: int | None = None
    # The pending backlog's change over the whole window (``span``): slow, steady growth
    # that stays under the noise floor in the short trend window shows here.
    window_change: int | None = None


def _delta(new: int | None, old: int | None) -> int | None:
    if new is None or old is None or new < old:
        return None  # no counter, or it went backwards (the adapter restarted)
    return new - old


def rates_between(queue: str, base: Sample, current: Sample) -> Rates | None:
    """Rates of ``queue`` from ``base`` to ``current``; None when the span is too short."""
    span = (current.at - base.at).total_seconds()
    if span < MIN_RATE_SPAN_S:
        return None
    now_c = current.queues.get(queue)
    old_c = base.queues.get(queue)
    if now_c is None or old_c is None:
        return None  # not read in both samples (an overview of other queues)
    net = (now_c.depth - old_c.depth) / span
    enq = _delta(now_c.enqueued, old_c.enqueued)
    done = _delta(now_c.completed, old_c.completed)
    in_rate = enq / span if enq is not None else None
    source: str | None = "counters" if done is not None else None
    completions: float | None = float(done) if done is not None else None
    if done is None and enq is not None:
        completions = max(0.0, enq - (now_c.depth - old_c.depth))
        source = "counters"
    if completions is None:
        completions = _heartbeat_completions(queue, base, current)
        source = "heartbeats" if completions is not None else "depth"
    out_rate = completions / span if completions is not None else None
    return Rates(in_rate=in_rate, out_rate=out_rate, net_rate=net, span=span, source=source,
                 completions=completions, age_before=old_c.age, window_change=now_c.pending - old_c.pending)


def _heartbeat_completions(queue: str, base: Sample, current: Sample) -> float | None:
    """Tasks finished by the workers serving ``queue``, each worker's share split evenly
    over its queues (heartbeats count per worker, not per queue)."""
    total: float | None = None
    for worker_id, (processed, queues) in current.workers.items():
        if queue not in queues or worker_id not in base.workers:
            continue
        before = base.workers[worker_id][0]
        if processed < before:
            continue
        total = (total or 0.0) + (processed - before) / max(1, len(queues))
    return total


class RateTracker:
    """A window of samples; one per ``Ops`` (the TUI and ``--watch`` keep theirs alive)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        if not window_s > 0:
            raise ValueError(f"rate window must be positive seconds, got {window_s!r}")
        self.window_s = float(window_s)
        self._samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def observe(self, sample: Sample) -> None:
        """Add ``sample`` (older than the latest one: ignored) and forget what left the window."""
        if self._samples and sample.at <= self._samples[-1].at:
            return
        self._samples.append(sample)
        while len(self._samples) > 1 and (sample.at - self._samples[0].at).total_seconds() > self.window_s:
            self._samples.popleft()

    def baseline(self, now: datetime, queue: str | None = None) -> Sample | None:
        """The oldest sample inside the window, at least ``MIN_RATE_SPAN_S`` before ``now``
        (and holding ``queue``, when given)."""
        for sample in self._samples:
            age = (now - sample.at).total_seconds()
            if age > self.window_s or (queue is not None and queue not in sample.queues):
                continue
            if age >= MIN_RATE_SPAN_S:
                return sample
        return None

    def rates(self, queue: str, current: Sample) -> Rates | None:
        base = self.baseline(current.at, queue)
        if base is None:
            return None
        found = rates_between(queue, base, current)
        if found is None:
            return None
        return self._with_trend(queue, found, current)

    def _with_trend(self, queue: str, found: Rates, current: Sample) -> Rates:
        """``found`` plus the pending backlog's recent change (see ``TREND_WINDOW_S``)."""
        now_c = current.queues[queue]
        recent = [
            s for s in self._samples
            if queue in s.queues and MIN_RATE_SPAN_S <= (current.at - s.at).total_seconds() <= TREND_WINDOW_S
        ]
        if not recent:
            return found
        first, last = recent[0], recent[-1]
        return replace(
            found,
            backlog_change=now_c.pending - first.queues[queue].pending,
            trend_span=(current.at - first.at).total_seconds(),
            last_change=now_c.pending - last.queues[queue].pending,
        )

    def history(self, queue: str) -> list[dict[str, Any]]:
        """Rates between consecutive samples (oldest first): what a sparkline draws."""
        points = []
        samples = list(self._samples)
        for before, after in zip(samples, samples[1:]):
            r = rates_between(queue, before, after)
            if r is not None:
                points.append({"at": to_iso(after.at), "in": r.in_rate, "out": r.out_rate, "net": r.net_rate})
        return points

    # -- persistence (one backend record shared by every one-shot caller) -----------

    def load_record(self, record: dict[str, Any] | None) -> None:
        """Merge persisted samples (malformed ones are skipped: the record is advisory)."""
        if not record:
            return
        loaded = []
        for raw in record.get("samples", []):
            try:
                loaded.append(Sample.from_dict(raw))
            except (KeyError, TypeError, ValueError):
                continue
        for sample in sorted(loaded, key=lambda s: s.at):
            if not self._samples or sample.at > self._samples[-1].at:
                self._samples.append(sample)

    def to_record(self) -> dict[str, Any]:
        """The last ``PERSIST_SAMPLES`` samples, at least ``PERSIST_GAP_S`` apart."""
        kept: list[Sample] = []
        for sample in reversed(self._samples):
            if kept and (kept[-1].at - sample.at).total_seconds() < PERSIST_GAP_S:
                continue
            kept.append(sample)
            if len(kept) >= PERSIST_SAMPLES:
                break
        return {"samples": [s.to_dict() for s in reversed(kept)]}


__all__ = [
    "MIN_RATE_SPAN_S",
    "PERSIST_GAP_S",
    "PERSIST_SAMPLES",
    "RATE_RECORD_KEY",
    "RATE_RECORD_KIND",
    "RATE_RECORD_TTL_S",
    "RATE_WINDOW_S",
    "TREND_WINDOW_S",
    "QueueCounters",
    "RateTracker",
    "Rates",
    "Sample",
    "rates_between",
]
