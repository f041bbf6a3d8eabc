"""Rates from sampled counters, their persistence, and the verdict rules (pure functions)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from stem_core.clock import utcnow
from stem_core.ops import RateTracker, Sample, queue_verdict
from stem_core.ops.verdict import Verdict, VerdictMemory
from stem_core.ops.rates import PERSIST_GAP_S, QueueCounters, Rates, rates_between

T0 = utcnow()


def sample(seconds: float, queues: dict[str, tuple], workers: dict[str, tuple[int, tuple[str, ...]]] | None = None) -> Sample:
    counters = {q: QueueCounters(enqueued=v[0], completed=v[1], depth=v[2], pending=v[3], age=v[4]) for q, v in queues.items()}
    return Sample(at=T0 + timedelta(seconds=seconds), queues=counters, workers=workers or {})


def test_rates_come_from_counter_deltas() -> None:
    # Given 100 enqueued and 60 completed over 10 s, depth up by 40
    base = sample(0, {"q": (1000, 900, 100, 100, 5.0)})
    now = sample(10, {"q": (1100, 960, 140, 140, 7.0)})
    # When rates are derived
    r = rates_between("q", base, now)
    # Then in, out and net are per second, from the counters
    assert r is not None
    assert (r.in_rate, r.out_rate, r.net_rate, r.span, r.source) == (10.0, 6.0, 4.0, 10.0, "counters")
    assert r.completions == 60 and r.age_before == 5.0


def test_out_rate_falls_back_to_in_minus_net_without_a_completion_counter() -> None:
    base = sample(0, {"q": (1000, None, 100, 100, 1.0)})
    now = sample(10, {"q": (1100, None, 140, 140, 1.0)})
    r = rates_between("q", base, now)
    assert r is not None and r.out_rate == 6.0 and r.source == "counters"


def test_out_rate_falls_back_to_heartbeats_split_over_each_workers_queues() -> None:
    # Given no counters; w1 serves q only (+20), w2 serves q and other (+20, half for q)
    workers0 = {"w1": (100, ("q",)), "w2": (50, ("q", "other"))}
    workers1 = {"w1": (120, ("q",)), "w2": (70, ("q", "other"))}
    base = sample(0, {"q": (None, None, 50, 50, None)}, workers0)
    now = sample(10, {"q": (None, None, 30, 30, None)}, workers1)
    r = rates_between("q", base, now)
    assert r is not None
    assert r.in_rate is None and r.out_rate == 3.0 and r.source == "heartbeats" and r.net_rate == -2.0


def test_only_depth_when_nothing_counts() -> None:
    r = rates_between("q", sample(0, {"q": (None, None, 50, 50, None)}), sample(5, {"q": (None, None, 40, 40, None)}))
    assert r is not None and r.out_rate is None and r.source == "depth" and r.net_rate == -2.0


def test_a_counter_that_went_backwards_gives_no_rate_not_a_negative_one() -> None:
    r = rates_between("q", sample(0, {"q": (500, 400, 10, 10, 1.0)}), sample(10, {"q": (5, 4, 1, 1, 1.0)}))
    assert r is not None and r.in_rate is None and r.out_rate is None


def test_samples_too_close_or_missing_the_queue_give_no_rate() -> None:
    base = sample(0, {"q": (0, 0, 0, 0, None)})
    assert rates_between("q", base, sample(0.1, {"q": (1, 0, 1, 1, None)})) is None
    assert rates_between("q", base, sample(5, {"other": (1, 0, 1, 1, None)})) is None
    assert rates_between("new", base, sample(5, {"new": (1, 0, 1, 1, None)})) is None


def test_tracker_uses_the_oldest_sample_in_the_window_that_has_the_queue() -> None:
    tracker = RateTracker(window_s=60)
    tracker.observe(sample(0, {"a": (0, 0, 0, 0, None)}))
    tracker.observe(sample(10, {"a": (10, 0, 10, 10, 1.0), "b": (0, 0, 0, 0, None)}))
    tracker.observe(sample(5, {"a": (99, 0, 0, 0, None)}))  # older than the latest: ignored
    current = sample(20, {"a": (20, 0, 20, 20, 2.0), "b": (10, 0, 10, 10, 1.0)})
    assert tracker.rates("a", current).in_rate == 1.0  # from t=0
    assert tracker.rates("b", current).in_rate == 1.0  # from t=10, the first sample with b
    assert len(tracker) == 2


def test_tracker_forgets_samples_that_left_the_window() -> None:
    tracker = RateTracker(window_s=30)
    for t in (0, 10, 20, 45):
        tracker.observe(sample(t, {"a": (t, 0, t, t, None)}))
    assert len(tracker) == 2  # 20 and 45
    assert tracker.baseline(T0 + timedelta(seconds=46)).at == T0 + timedelta(seconds=20)
    assert [p["in"] for p in tracker.history("a")] == [1.0]


def test_persisted_record_keeps_spaced_samples_and_loads_back() -> None:
    tracker = RateTracker()
    for t in (0, 0.5, 1.0, PERSIST_GAP_S + 1.5, 2 * PERSIST_GAP_S + 3):
        tracker.observe(sample(t, {"a": (int(t * 10), 0, 1, 1, 0.5)}, {"w": (7, ("a",))}))
    record = tracker.to_record()
    # the three samples in the first gap collapse to one
    assert len(record["samples"]) == 3
    fresh = RateTracker()
    fresh.load_record(record)
    fresh.load_record({"samples": [{"at": "garbage"}, {"queues": {}}]})  # malformed: skipped
    assert len(fresh) == 3
    assert fresh.latest.workers == {"w": (7, ("a",))}
    assert fresh.latest.queues["a"].age == 0.5


def rates(**kw: object) -> Rates:
    values = {"in_rate": 1.0, "out_rate": 1.0, "net_rate": 0.0, "span": 30.0, "source": "counters", "completions": 30.0,
              "age_before": 1.0}
    values.update(kw)
    return Rates(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("counts", "pause", "serving", "r", "code", "words"),
    [
        ((0, 0, 0, None), None, 1, rates(in_rate=0.0, out_rate=0.0, completions=0.0), "idle", "idle"),
        ((0, 0, 0, None), None, 1, None, "idle", "idle"),
        ((0, 0, 0, None), None, 1, rates(in_rate=12.0, out_rate=12.0), "steady", "keeping up, 12/s"),
        ((0, 3, 0, None), None, 0, None, "scheduled", "3 delayed"),
        ((0, 0, 0, None), {"by": "ann", "reason": "deploy"}, 1, None, "paused", "paused by ann: deploy"),
        ((5, 0, 0, 9.0), {"by": "ann", "reason": "deploy"}, 1, rates(), "paused", "paused by ann: deploy"),
        ((5, 0, 0, 9.0), None, 0, rates(), "no-workers", "no workers (5 waiting)"),
        ((5, 0, 0, 9.0), None, 2, None, "unknown", "rates after a second sample"),
        ((5, 0, 1, 40.0), None, 2, rates(completions=0.0, out_rate=0.0, age_before=10.0), "stalled", "nothing done in 30s"),
        ((5, 0, 1, 40.0), None, 2, rates(completions=0.0, out_rate=0.0, age_before=39.0, span=3.0), "steady", "flat"),
        ((0, 0, 3, None), None, 2, rates(completions=0.0, out_rate=0.0), "busy", "3 in flight"),
        ((50, 0, 2, 1.0), None, 2, rates(net_rate=2.0), "growing", "+2/s"),
        ((50, 0, 10, 1.0), None, 2, rates(net_rate=-2.0), "draining", "empties in ~30s"),
        ((50, 0, 2, 1.0), None, 2, rates(net_rate=0.0, out_rate=5.0), "steady", "5/s"),
        # An in-flight count the broker cannot know (RabbitMQ without its management API):
        # an otherwise empty queue is unknown, not idle; with traffic it still keeps up
        ((0, 0, None, None), None, 2, rates(in_rate=0.0, out_rate=0.0, completions=0.0), "unknown", "in flight n/a"),
        ((0, 0, None, None), None, 2, None, "unknown", "in flight n/a"),
        ((0, 0, None, None), None, 2, rates(in_rate=4.0, out_rate=4.0), "steady", "keeping up, 4/s"),
        ((0, 2, None, None), None, 2, None, "scheduled", "2 delayed"),
        ((5, 0, None, 9.0), None, 0, rates(), "no-workers", "no workers (5 waiting)"),
    ],
)
def test_verdict_rules(counts: tuple, pause: dict | None, serving: int, r: Rates | None, code: str, words: str) -> None:
    pending, delayed, inflight, age = counts
    verdict = queue_verdict(pending=pending, delayed=delayed, inflight=inflight, oldest_age=age, pause=pause,
                            serving=serving, rates=r)
    assert verdict.code == code
    assert words in verdict.text


def test_draining_forecast_is_depth_over_the_net_rate() -> None:
    verdict = queue_verdict(pending=100, delayed=0, inflight=20, oldest_age=3.0, pause=None, serving=1,
                            rates=rates(net_rate=-4.0))
    assert verdict.eta_seconds == 30.0


def test_a_queue_whose_age_does_not_grow_is_not_stalled() -> None:
    # nothing completed in the window, but the head message is younger than before: new work
    verdict = queue_verdict(pending=2, delayed=0, inflight=0, oldest_age=1.0, pause=None, serving=1,
                            rates=rates(completions=0.0, out_rate=0.0, age_before=5.0, net_rate=0.1))
    assert verdict.code == "growing"


def trend(change: int, last: int, span: float = 5.0, span_: float | None = None, **kw: object) -> Rates:
    """Rates with a short-window trend (``span``); ``span_`` overrides the whole window's span."""
    if span_ is not None:
        kw["span"] = span_
    return rates(backlog_change=change, trend_span=span, last_change=last, **kw)


@pytest.mark.parametrize(
    ("pending", "r", "code"),
    [
        (40, trend(20, 4), "growing"),  # +20 in 5 s and still rising
        (40, trend(20, -3), "steady"),  # it rose, but turned at the last reading
        (40, trend(3, 1), "steady"),  # +3: below the noise floor
        (5000, trend(60, 10), "steady"),  # +60 on 5,000: 1.2 %, noise
        (40, trend(-20, -4), "draining"),
        (0, trend(-20, -4, in_rate=0.0, out_rate=4.0), "steady"),  # drained: empty but flowing
    ],
)
def test_growth_and_drain_come_from_the_recent_backlog_trend(pending: int, r: Rates, code: str) -> None:
    # A window-wide net rate that says the opposite is ignored when the trend is known.
    opposite = dataclasses.replace(r, net_rate=-(r.backlog_change or 0) / 5.0)
    verdict = queue_verdict(pending=pending, delayed=0, inflight=0, oldest_age=1.0, pause=None, serving=1, rates=opposite)
    assert verdict.code == code


def test_a_burst_then_drain_is_draining_not_growing() -> None:
    # Given a window that starts before a burst of 200 (net +), and a backlog falling since
    r = trend(-60, -15, span=8.0, net_rate=3.0)
    verdict = queue_verdict(pending=140, delayed=0, inflight=4, oldest_age=2.0, pause=None, serving=2, rates=r)
    assert verdict.code == "draining"
    assert verdict.eta_seconds == pytest.approx(144 / 7.5)


def test_memory_changes_a_flow_verdict_only_when_two_readings_agree() -> None:
    memory = VerdictMemory()
    steady, growing = Verdict("steady", "steady"), Verdict("growing", "growing (+2/s)")
    assert memory.settle("q", steady, pending=9).code == "steady"
    assert memory.settle("q", growing, pending=9).code == "steady"  # one reading: noise
    assert memory.settle("q", steady, pending=9).code == "steady"
    assert memory.settle("q", growing, pending=9).code == "steady"  # the count restarted
    assert memory.settle("q", growing, pending=9).code == "growing"  # two in a row
    assert memory.settle("other", growing, pending=9).code == "growing"  # per queue


def test_memory_shows_facts_at_once() -> None:
    memory = VerdictMemory()
    memory.settle("q", Verdict("steady", "steady"), pending=3)
    assert memory.settle("q", Verdict("no-workers", "no workers (3 waiting)"), pending=3).code == "no-workers"
    assert memory.settle("q", Verdict("growing", "growing"), pending=3).code == "growing"


def test_memory_never_holds_a_backlog_verdict_over_an_empty_queue() -> None:
    memory = VerdictMemory()
    memory.settle("q", Verdict("growing", "growing (+2/s)"), pending=40)
    assert memory.settle("q", Verdict("steady", "steady (keeping up)"), pending=0).code == "steady"


def test_tracker_reads_the_backlog_trend_over_the_recent_window_only() -> None:
    # Given samples 30 s ago (a burst's peak), 6 s and 3 s ago, and now
    now = utcnow()

    def at(seconds_ago: float, pending: int) -> Sample:
        counters = QueueCounters(enqueued=None, completed=None, depth=pending, pending=pending, age=1.0)
        return Sample(at=now - timedelta(seconds=seconds_ago), queues={"q": counters}, workers={})

    tracker = RateTracker()
    for sample in (at(30, 500), at(6, 40), at(3, 30)):
        tracker.observe(sample)
    # When rates are read for the current sample
    r = tracker.rates("q", at(0, 20))
    # Then the window-wide net rate sees the fall since the peak, and the trend only the
    # recent 6 s: -20 over that span, -10 at the last step
    assert r is not None and r.net_rate == pytest.approx(-16.0)
    assert r.backlog_change == -20 and r.trend_span == pytest.approx(6.0) and r.last_change == -10


@pytest.mark.parametrize(
    ("r", "code"),
    [
        # +0.6/s for a minute: +3 in the short window (noise), +36 over the window, in > out
        (trend(3, -1, span=5.0, window_change=36, span_=None, in_rate=1.3, out_rate=0.7), "growing"),
        # the same, but more out than in: the backlog figure is not to be trusted
        (trend(3, -1, span=5.0, window_change=36, span_=None, in_rate=0.7, out_rate=1.3), "steady"),
        # a burst a minute ago, falling now: not growing
        (trend(-3, -1, span=5.0, window_change=36, span_=None, in_rate=1.3, out_rate=0.7), "steady"),
        # a busy queue whose pending count rose, with in and out 3 % apart: steady
        (trend(2, 1, span=5.0, window_change=12, span_=None, in_rate=6.2, out_rate=6.0), "steady"),
        # a slow drain
        (trend(-3, 1, span=5.0, window_change=-30, span_=None, in_rate=0.5, out_rate=1.0), "draining"),
        # the window is too short to call slow growth
        (trend(3, 1, span=5.0, window_change=36, span_=20.0, in_rate=1.3, out_rate=0.7), "steady"),
    ],
)
def test_slow_steady_growth_shows_over_the_whole_window(r: Rates, code: str) -> None:
    verdict = queue_verdict(pending=60, delayed=0, inflight=3, oldest_age=40.0, pause=None, serving=1, rates=r)
    assert verdict.code == code
