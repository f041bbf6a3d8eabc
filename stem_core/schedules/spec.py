"""Schedule specs: ``every 30s``, ``cron */5 * * * *`` (5 fields, or 6 with seconds first),
and ``at 2027-01-01T00:00Z``. ``parse_spec`` checks one (``ValueError``: one line saying
what to type); ``Spec.next_after(t)`` is the first due time strictly after ``t``.

Cron expressions are croniter's (not a hand-written parser), evaluated on aware datetimes
in the schedule's time zone (``zoneinfo``), so a daily ``0 3 * * *`` in Europe/Paris stays at
03:00 local time across DST changes; a local time skipped by a spring-forward runs at the
next existing instant (croniter's rule), and one repeated in the autumn runs once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..clock import UTC, parse_iso, to_iso
from ..durations import parse_duration
from ..errors import ConfigurationError

KINDS = ("every", "cron", "at")
# The shortest interval a schedule may have.
MIN_INTERVAL_S = 1.0
_US = 1_000_000


def _croniter():  # type: ignore[no-untyped-def]
    try:
        from croniter import croniter
    except ImportError:
        raise ConfigurationError("cron schedules need the 'beat' extra: pip install 'stem-queue[beat]'") from None
    return croniter


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``ValueError`` when unknown)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError(f"invalid time zone {name!r}: use an IANA name such as UTC or Europe/Paris")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Paris") from None


@dataclass(frozen=True)
class Spec:
    """A parsed spec. ``text`` is its normal form (what is stored and shown)."""

    kind: str
    text: str
    seconds: float = 0.0          # every
    expr: str = ""                # cron
    instant: datetime | None = None  # at
    tz: str = "UTC"

    def next_after(self, t: datetime, anchor: datetime | None = None) -> datetime | None:
        """The first due time strictly after ``t`` (None: a one-off that is past).
        Intervals count from ``anchor`` (default: the epoch)."""
        if self.kind == "at":
            assert self.instant is not None
            return self.instant if self.instant > t else None
        if self.kind == "every":
            base = _us(anchor) if anchor is not None else 0
            step = round(self.seconds * _US)
            k = (_us(t) - base) // step + 1
            return _from_us(base + k * step)
        croniter = _croniter()
        tz = zone(self.tz)
        it = croniter(self.expr, t.astimezone(tz), second_at_beginning=self.expr.count(" ") == 5)
        for _ in range(4):
            found = it.get_next(datetime).astimezone(UTC)
            # A wall time the autumn change repeats runs at its first occurrence only
            # (unless the hour field is a wildcard: an hourly job runs every real hour).
            if found.astimezone(tz).fold == 0 or self._hour_field() == "*":
                return found
        return found

    def _hour_field(self) -> str:
        fields = self.expr.split(" ")
        return fields[2] if len(fields) == 6 else fields[1]

    def latest_at_or_before(self, t: datetime, first: datetime, anchor: datetime | None = None) -> datetime:
        """The latest due time in ``[first, t]`` (``first`` is one, at or before ``t``)."""
        if self.kind == "at":
            return first
        if self.kind == "every":
            base = _us(anchor) if anchor is not None else 0
            step = round(self.seconds * _US)
            k = (_us(t) - base) // step
            return max(first, _from_us(base + k * step))
        croniter = _croniter()
        local = (t + timedelta(microseconds=1)).astimezone(zone(self.tz))
        it = croniter(self.expr, local, second_at_beginning=self.expr.count(" ") == 5)
        return max(first, it.get_prev(datetime).astimezone(UTC))


def _us(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _US + delta.microseconds


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


def parse_spec(text: str, *, tz: str = "UTC") -> Spec:
    """``every <duration>``, ``cron <5 or 6 fields>`` (or the bare fields), ``at <ISO time>``."""
    if not isinstance(text, str) or not text.strip() or len(text) > 200:
        raise ValueError(f"invalid schedule {text!r}: use 'every 30s', 'cron */5 * * * *' or 'at 2027-01-01T00:00Z'")
    zone(tz)
    raw = " ".join(text.split())
    head, _, rest = raw.partition(" ")
    head = head.lower()
    if head == "every":
        try:
            seconds = parse_duration(rest, option="interval")
        except ValueError as exc:
            raise ValueError(f"invalid schedule {text!r}: {exc}") from None
        if not math.isfinite(seconds) or seconds < MIN_INTERVAL_S:
            raise ValueError(f"invalid schedule {text!r}: the interval must be at least {MIN_INTERVAL_S:g}s")
        return Spec("every", f"every {rest.strip()}", seconds=seconds, tz=tz)
    if not rest and head[:1].isdigit() and not head.isdigit():  # a bare duration ("30s"): every
        return parse_spec(f"every {raw}", tz=tz)
    if head == "at":
        try:
            instant = parse_iso(rest)
        except ValueError:
            raise ValueError(f"invalid schedule {text!r}: 'at' needs an ISO-8601 time such as 2027-01-01T00:00Z") from None
        return Spec("at", f"at {to_iso(instant)}", instant=instant, tz=tz)
    expr = rest if head == "cron" else raw
    fields = expr.split(" ")
    if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(
            f"invalid schedule {text!r}: use 'every 30s', 'cron */5 * * * *' (5 fields, or 6 with seconds first) "
            "or 'at 2027-01-01T00:00Z'"
        )
    croniter = _croniter()
    if not croniter.is_valid(expr, second_at_beginning=len(fields) == 6):
        raise ValueError(f"invalid schedule {text!r}: not a valid cron expression")
    spec = Spec("cron", f"cron {expr}", expr=expr, tz=tz)
    try:
        spec.next_after(datetime.now(UTC))
    except Exception as exc:  # croniter raises its own errors for impossible dates (Feb 30)
        raise ValueError(f"invalid schedule {text!r}: {exc}") from None
    return spec


__all__ = ["KINDS", "MIN_INTERVAL_S", "Spec", "parse_spec", "zone"]
