"""``SweepSchedule``: the Redis prune's and the SQLite cleanup's one rule of when to sweep."""

from __future__ import annotations

from stem_core.clock import SweepSchedule


def test_a_sweep_is_due_at_the_first_write_then_once_per_interval() -> None:
    schedule = SweepSchedule(3600.0)
    assert schedule.due() is True
    assert schedule.due() is False  # started: the next one waits for the interval


def test_a_full_batch_makes_the_next_write_sweep_again_and_a_short_one_does_not() -> None:
    schedule = SweepSchedule(3600.0)
    assert schedule.due()
    schedule.finished(full=True)
    assert schedule.due() is True
    schedule.finished(full=False)
    assert schedule.due() is False


def test_a_sweep_that_never_finished_waits_for_the_interval() -> None:
    # A failed sweep reports nothing: it runs again at the next interval, not at once
    schedule = SweepSchedule(3600.0)
    assert schedule.due()
    assert schedule.due() is False
    schedule.make_due()
    assert schedule.due() is True
