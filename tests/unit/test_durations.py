"""The duration and time grammar both front ends use (``stem_core.durations``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stem_core.clock import utcnow
from stem_core.durations import is_duration, parse_duration, parse_time


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("10s", 10.0), ("5m", 300.0), ("2h", 7200.0),
                                               ("1d", 86400.0), ("1.5", 1.5), (" 3 s ", 3.0)])
def test_durations_in_every_unit(text: str, seconds: float) -> None:
    assert is_duration(text) and parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "10 parsecs", "-5s", "5w"])
def test_a_bad_duration_says_what_to_type(text: str) -> None:
    assert not is_duration(text)
    with pytest.raises(ValueError, match=r"invalid --delay .*use e\.g\. 500ms, 10s, 5m, 2h"):
        parse_duration(text, option="--delay")


def test_a_time_is_iso_or_a_duration_ago() -> None:
    before = utcnow()
    ago = parse_time("1h", option="--since")
    after = utcnow()
    assert before - timedelta(hours=1) <= ago <= after - timedelta(hours=1)
    assert parse_time("2026-01-02T03:04:05Z", option="--since").isoformat() == "2026-01-02T03:04:05+00:00"
    with pytest.raises(ValueError, match="invalid --since 'last tuesday': use an ISO-8601 time"):
        parse_time("last tuesday", option="--since")
