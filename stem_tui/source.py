"""The data source of ``stem tui``: one long-lived ``Ops``, polled in Textual workers.

Polls never overlap: a poll runs as one worker, and only when it has finished is the next
one armed with ``set_timer`` (so a broker slower than the interval stretches the cadence
instead of stacking requests). ``refresh_now`` during a poll asks for one more right
after it. A failed poll posts ``SourceFailed`` and re-arms with a backoff; the TUI keeps
showing the last data under a banner and recovers by itself.

Everything a view shows comes from one ``Snapshot`` read at one instant; what is read
beyond the overview depends on the view (``Want``), so the leases of every queue are
read only while the Leases view is open.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from stem_core.clock import monotonic, utcnow
from stem_core.contract import Broker, ResultBackend
from stem_core.errors import BrokerUnavailable, StemError, Unsupported
from stem_core.ops import (
    CONNECT_TIMEOUT_S,
    LeaseInfo,
    Ops,
    Overview,
    QueueDetail,
    UnknownQueue,
    WorkerInfo,
    open_adapters,
)
from stem_core.settings import Settings, redact_text, redact_url, url_secrets

from .messages import SnapshotReady, SourceFailed

if TYPE_CHECKING:
    from textual.app import App
    from textual.timer import Timer

T = TypeVar("T")
Clock = Callable[[], datetime]
ConnectFn = Callable[[], Awaitable[tuple[Broker, ResultBackend]]]

DEFAULT_REFRESH_S = 2.0
# `+` / `-` step through these refresh intervals (seconds).
REFRESH_STEPS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# A whole poll that takes longer than this counts as "unreachable" (a connect: longer
# than CONNECT_TIMEOUT_S).
FETCH_TIMEOUT_S = 15.0
# While the broker is down, retry after interval x 2^(failures-1), at most this long.
RETRY_MAX_S = 10.0
# After this many failed polls in a row the connections are dropped and reopened.
RECONNECT_AFTER_FAILURES = 3
# Rows per page in Queue detail; newest dead letters read per queue for the Dead view.
PAGE_SIZE = 50
DEAD_PER_QUEUE = 50
DEAD_VIEW_MAX = 500
# Audit records read per poll (the Events view turns new ones into events).
AUDIT_PAGE = 20
# Sparkline history kept per queue (points, one per poll).
HISTORY_POINTS = 32


@dataclass(frozen=True, slots=True)
class Want:
    """What the current view needs beyond the overview."""

    view: str = "queues"
    queue: str | None = None
    state: str = "pending"
    offset: int = 0
    limit: int = PAGE_SIZE
    # Detail pages of pending/delayed/inflight: the next_cursor of the page before (None:
    # the first page); dead letters page by ``offset``.
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read by one poll. ``notes`` say why a part is missing (e.g. a broker
    that cannot peek has no lease list)."""

    at: datetime
    want: Want
    overview: Overview
    workers: list[WorkerInfo]
    audit: list[dict[str, Any]]
    history: dict[str, tuple[float | None, ...]]
    leases: list[LeaseInfo] | None = None
    detail: QueueDetail | None = None
    dead: list[dict[str, Any]] | None = None
    # The Schedules view: each stored schedule (``Schedule.to_dict``) with ``last_state``,
    # the state of the task its last run enqueued.
    schedules: list[dict[str, Any]] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    fetch_seconds: float = 0.0


def settings_connector(settings: Settings) -> ConnectFn:
    """Connect to the broker and backend of ``settings`` (the default ``ConnectFn``); the
    source bounds the connect itself, so a black-holed host reads as a slow poll."""

    async def connect() -> tuple[Broker, ResultBackend]:
        return await open_adapters(settings, timeout=None)

    return connect


class DataSource:
    """Polls ``Ops`` for the app; the app calls ``attach`` then ``start``."""

    def __init__(
        self,
        connect: ConnectFn,
        *,
        label: str = "",
        namespace: str = "?",
        clock: Clock = utcnow,
        actor: str | None = None,
        stale_after: float | None = None,
        interval: float = DEFAULT_REFRESH_S,
        live: bool = True,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        self._connect = connect
        self.label = label
        # The secrets of the configured URLs: no banner or error line may show them.
        self.secrets = secrets
        self.namespace = namespace
        self.clock = clock
        self.actor = actor
        self.stale_after = stale_after
        self.interval = interval
        self.live = live
        self.paused = False
        self.want = Want()
        self.failures = 0
        self.last: Snapshot | None = None
        self._ops: Ops | None = None
        self._app: App[Any] | None = None
        self._timer: Timer | None = None
        self._running = False
        self._again = False
        self._closed = False
        self._history: dict[str, collections.deque[float | None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> "DataSource":
        secrets = url_secrets(settings.broker_url) | url_secrets(settings.backend_url)
        return cls(settings_connector(settings), label=redact_url(settings.broker_url), namespace=settings.namespace,
                   secrets=secrets, **options)

    def describe(self, exc: BaseException) -> str:
        """``describe_error(exc)`` with the configured URLs' secrets hidden."""
        return redact_text(describe_error(exc), self.secrets)

    @property
    def ops(self) -> Ops | None:
        return self._ops

    # -- scheduling (on the app's loop) --------------------------------------------------

    def attach(self, app: "App[Any]") -> None:
        self._app = app

    def start(self) -> None:
        """The first poll (a source that is not ``live`` polls only when asked)."""
        if self.live:
            self.refresh_now()

    def refresh_now(self) -> None:
        """Poll now, or right after the poll in progress."""
        if self._closed or self._app is None:
            return
        if self._running:
            self._again = True
            return
        self._cancel_timer()
        self._running = True
        self._app.run_worker(self._cycle(), group="stem-refresh", exit_on_error=False)

    def set_paused(self, paused: bool) -> None:
        """Stop (or restart) polling by the clock; ``refresh_now`` still works."""
        self.paused = paused
        if paused:
            self._cancel_timer()
        elif not self._running:
            self._arm()

    def step_interval(self, direction: int) -> float:
        """The next longer (``+1``) or shorter (``-1``) refresh interval; re-arms the timer."""
        steps = REFRESH_STEPS_S
        if direction > 0:
            self.interval = next((s for s in steps if s > self.interval), steps[-1])
        else:
            self.interval = next((s for s in reversed(steps) if s < self.interval), steps[0])
        if not self._running and not self.paused:
            self._cancel_timer()
            self._arm()
        return self.interval

    def retry_delay(self) -> float:
        return min(RETRY_MAX_S, max(1.0, self.interval) * 2 ** max(0, self.failures - 1))

    def _arm(self) -> None:
        if self._closed or self._app is None or not self.live or self.paused:
            return
        delay = self.retry_delay() if self.failures else self.interval
        self._timer = self._app.set_timer(delay, self.refresh_now, name="stem-refresh")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    async def _cycle(self) -> None:
        try:
            while True:
                self._again = False
                await self._poll_once()
                if not self._again or self._closed:
                    break
        finally:
            self._running = False
            self._arm()

    async def _poll_once(self) -> None:
        assert self._app is not None
        try:
            snapshot = await self.fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes the banner, never a crash
            self.failures += 1
            if self.failures >= RECONNECT_AFTER_FAILURES:
                await self._drop()
            retry = self.retry_delay() if self.live and not self.paused else None
            self._app.post_message(SourceFailed(self.describe(exc), self.failures, retry, unreachable=is_unreachable(exc)))
            return
        self.failures = 0
        self.last = snapshot
        self._app.post_message(SnapshotReady(snapshot))

    # -- reading --------------------------------------------------------------------------

    async def _ensure(self) -> Ops:
        if self._ops is None:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                broker, backend = await self._connect()
            # The TUI's clock is the ops' "now" too: every age on screen is from one instant.
            self._ops = Ops(broker, backend, actor=self.actor, stale_after=self.stale_after, clock=self.clock)
        return self._ops

    async def fetch(self) -> Snapshot:
        """One poll: the overview, workers and recent audit records, plus the current
        view's extra (leases, a queue page, dead letters)."""
        started = monotonic()
        want = self.want
        async with asyncio.timeout(FETCH_TIMEOUT_S):
            ops = await self._ensure()
            # Independent reads at once: on a remote broker a poll costs one round trip
            # of latency, not three.
            overview, workers, audit = await asyncio.gather(ops.overview(), ops.workers(), ops.audit_log(AUDIT_PAGE))
            notes: dict[str, str] = {}
            leases = detail = dead = schedules = None
            if want.view == "schedules":
                schedules = await _part(notes, "schedules", self._schedules(ops))
            if want.view == "leases":
                leases = await _part(notes, "leases", ops.leases())
            elif want.view == "detail" and want.queue is not None:
                detail = await _part(notes, "detail", ops.queue_detail(want.queue, want.state, want.limit, want.offset, want.cursor))
            elif want.view == "dead":
                dead = await _part(notes, "dead", self._dead_letters(ops, overview))
        history = self._record(overview)
        return Snapshot(at=overview.at, want=want, overview=overview, workers=workers, audit=audit, history=history,
                        leases=leases, detail=detail, dead=dead, schedules=schedules, notes=notes,
                        fetch_seconds=monotonic() - started)

    async def _schedules(self, ops: Ops) -> list[dict[str, Any]]:
        found = await ops.schedules()
        statuses = await asyncio.gather(*(ops.backend.get_status(s.last_task_id) for s in found if s.last_task_id))
        states = iter(statuses)
        rows = []
        for s in found:
            status = next(states) if s.last_task_id else None
            rows.append({**s.to_dict(), "last_state": status.state.value if status is not None else None})
        return rows

    async def _dead_letters(self, ops: Ops, overview: Overview) -> list[dict[str, Any]]:
        # The overview's counts say which queues fill the view (up to DEAD_VIEW_MAX rows),
        # so their pages are read at once: one round trip, not one per queue.
        queues: list[str] = []
        expected = 0
        for q in overview.queues:
            if q.dead > 0 and expected < DEAD_VIEW_MAX:
                queues.append(q.queue)
                expected += min(q.dead, DEAD_PER_QUEUE)
        pages = await asyncio.gather(*(ops.dead_letters(queue, DEAD_PER_QUEUE) for queue in queues))
        rows = [{"queue": queue, **entry.to_dict(), "dead_at_time": entry.dead_at}
                for queue, page in zip(queues, pages) for entry in page.entries]
        rows.sort(key=lambda r: r["dead_at_time"], reverse=True)
        return rows[:DEAD_VIEW_MAX]

    def _record(self, overview: Overview) -> dict[str, tuple[float | None, ...]]:
        names = {q.queue for q in overview.queues}
        for gone in [name for name in self._history if name not in names]:
            del self._history[gone]
        for q in overview.queues:
            self._history.setdefault(q.queue, collections.deque(maxlen=HISTORY_POINTS)).append(q.out_rate)
        return {name: tuple(points) for name, points in self._history.items()}

    # -- acting ----------------------------------------------------------------------------

    async def call(self, work: Callable[[Ops], Awaitable[T]]) -> T:
        """Run ``work`` with the connected ``Ops`` (actions, explain, status lookups)."""
        async with asyncio.timeout(FETCH_TIMEOUT_S + CONNECT_TIMEOUT_S):
            ops = await self._ensure()
        return await work(ops)

    async def close(self) -> None:
        self._closed = True
        self._cancel_timer()
        await self._drop()

    async def _drop(self) -> None:
        ops, self._ops = self._ops, None
        if ops is None:
            return
        try:
            await ops.close()  # the last rate samples go in (bounded); the adapters are ours
        except Exception:  # noqa: BLE001 - a failing write only loses those samples
            pass
        for adapter in (ops.backend, ops.broker):
            try:
                await adapter.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
                pass


async def _part(notes: dict[str, str], name: str, read: Awaitable[T]) -> T | None:
    """One optional part of a snapshot: a capability the broker lacks or a queue that
    vanished becomes a note the view shows, not a failed poll."""
    try:
        return await read
    except (Unsupported, UnknownQueue) as exc:
        notes[name] = str(exc)
        return None


def is_unreachable(exc: BaseException) -> bool:
    """Whether a failed poll means a server could not be reached (not answered in time,
    connection refused or lost), rather than a read that failed on a server that answered."""
    return isinstance(exc, (ConnectionError, OSError, TimeoutError))


def describe_error(exc: BaseException) -> str:
    """One line for the banner."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {FETCH_TIMEOUT_S:.0f} s"
    if isinstance(exc, (BrokerUnavailable, StemError, ValueError)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, (ConnectionError, OSError)):
        return f"{type(exc).__name__}: {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_REFRESH_S",
    "DataSource",
    "FETCH_TIMEOUT_S",
    "PAGE_SIZE",
    "REFRESH_STEPS_S",
    "Snapshot",
    "Want",
    "describe_error",
    "is_unreachable",
    "settings_connector",
]
