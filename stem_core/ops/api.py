"""``Ops``: the one read/act API behind the CLI and the TUI.

    async with await Ops.open(settings) as ops:     # actor: $STEM_ACTOR or $USER@host
        overview = await ops.overview()             # per queue counts, rates, verdict
        leases = await ops.leases("emails")         # holders, heartbeat ages, stuck flags
        why = await ops.explain(task_id)            # where it is, why it is not running
        preview = await ops.requeue("emails", stuck_leases=True, dry_run=True)

``Ops(broker, backend)`` works over adapters the caller already holds (and closes).
Keep one ``Ops`` alive to accumulate rate history (the TUI, ``--watch``); one-shot
callers share persisted samples (``docs/ops.md``).

``Ops`` is a facade: each public method is one line naming the part that does the work.

    directory   known queues, live workers, pauses, capabilities, the clock
    history     the rate samples, shared through one backend record
    inspector   overview, workers, leases, queue pages, dead letters
    explainer   explain(task_id)
    audit       the audit wrapper every action goes through, and the audit log
    actions     requeue, replay, purge, remove
    dispatcher  pause, resume, broadcast, broadcast_raw, enqueue, enqueue_many
    scheduler   schedules, schedule; add/remove/pause/resume/run-now of a schedule
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, Concatenate, ParamSpec, TypeVar

from ..contract import Broker, ResultBackend
from ..errors import ConfigurationError
from ..settings import Settings
from .actions import Actions
from .audit import AuditTrail, default_actor
from .connect import CONNECT_TIMEOUT_S, open_adapters
from .directory import Clock, Directory, system_now
from .dispatch import Dispatcher
from .explain import Explainer
from .history import RateHistory
from .inspect import Inspector
from .rates import RateTracker
from .schedules import ScheduleOps

P = ParamSpec("P")
R = TypeVar("R")


def _on(part: str, method: Callable[Concatenate[Any, P], Awaitable[R]]) -> Callable[Concatenate["Ops", P], Awaitable[R]]:
    """``Ops.<name>``: awaits ``method`` on the part held in the attribute ``part``, with
    ``method``'s signature and docstring (so ``help(Ops.overview)`` reads as before)."""
    name = method.__name__

    @functools.wraps(method)
    async def call(self: Ops, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await getattr(getattr(self, part), name)(*args, **kwargs)
        return result

    return call


class Ops:
    """Reads, explanations, audited repairs and audited sends over a connected broker and
    result backend. ``clock`` is "now" for every age and verdict (default: the system's)."""

    def __init__(
        self,
        broker: Broker,
        backend: ResultBackend,
        *,
        actor: str | None = None,
        stale_after: float | None = None,
        persist_rates: bool = True,
        tracker: RateTracker | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(broker, Broker) or not isinstance(backend, ResultBackend):
            raise ConfigurationError("Ops needs a connected Broker and ResultBackend")
        if stale_after is not None and (
            isinstance(stale_after, bool) or not isinstance(stale_after, (int, float)) or not stale_after > 0
        ):
            raise ValueError(f"stale_after must be positive seconds or None, got {stale_after!r}")
        self.broker = broker
        self.backend = backend
        self.actor = actor or default_actor()
        # None: each worker is live for its own heartbeat interval plus a grace (liveness.py).
        self.stale_after = float(stale_after) if stale_after is not None else None
        self._owns_adapters = False
        self.directory = Directory(broker, backend, stale_after=self.stale_after, clock=clock or system_now)
        self.history = RateHistory(backend, tracker or RateTracker(), persist=persist_rates)
        self.inspector = Inspector(broker, backend, self.directory, self.history)
        self.explainer = Explainer(broker, backend, self.directory, self.inspector)
        self.audit = AuditTrail(backend, actor=self.actor, namespace=broker.namespace, broker=broker.scheme)
        self.actions = Actions(broker, self.directory, self.inspector, self.audit)
        self.dispatcher = Dispatcher(broker, backend, self.directory, self.audit, actor=self.actor)
        self.scheduler = ScheduleOps(broker, backend, self.audit, clock or system_now, self.dispatcher.app)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        actor: str | None = None,
        stale_after: float | None = None,
        persist_rates: bool = True,
        connect_timeout: float | None = CONNECT_TIMEOUT_S,
    ) -> "Ops":
        """An ``Ops`` over the broker and backend of ``settings``, which it owns: ``close()``
        (or leaving ``async with``) closes them. ``BrokerUnavailable`` (``BackendUnavailable``)
        when a server does not answer within ``connect_timeout``."""
        broker, backend = await open_adapters(settings, timeout=connect_timeout)
        try:
            ops = cls(broker, backend, actor=actor, stale_after=stale_after, persist_rates=persist_rates, clock=clock)
        except BaseException:
            await _close_both(broker, backend)
            raise
        ops._owns_adapters = True
        return ops

    async def close(self) -> None:
        """Finish writing the rate samples, then close the adapters when ``Ops.open``
        opened them; adapters passed in are left to their owner."""
        await self.history.flush()
        if self._owns_adapters:
            self._owns_adapters = False
            await _close_both(self.broker, self.backend)

    async def __aenter__(self) -> "Ops":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def namespace(self) -> str:
        return self.broker.namespace

    @property
    def rates(self) -> RateTracker:
        """The rate samples this ``Ops`` has seen (``rates.history(queue)`` draws a sparkline)."""
        return self.history.tracker

    @property
    def persist_rates(self) -> bool:
        return self.history.persist

    # -- reads ---------------------------------------------------------------------------
    overview = _on("inspector", Inspector.overview)
    workers = _on("inspector", Inspector.workers)
    leases = _on("inspector", Inspector.leases)
    queue_detail = _on("inspector", Inspector.queue_detail)
    dead_letters = _on("inspector", Inspector.dead_letters)
    dead_letter = _on("inspector", Inspector.dead_letter)
    require_queue = _on("directory", Directory.require_queue)
    explain = _on("explainer", Explainer.explain)
    audit_log = _on("audit", AuditTrail.records)

    # -- audited repairs -----------------------------------------------------------------
    requeue = _on("actions", Actions.requeue)
    replay = _on("actions", Actions.replay)
    purge = _on("actions", Actions.purge)
    remove = _on("actions", Actions.remove)

    # -- audited sends -------------------------------------------------------------------
    pause = _on("dispatcher", Dispatcher.pause)
    resume = _on("dispatcher", Dispatcher.resume)
    broadcast = _on("dispatcher", Dispatcher.broadcast)
    broadcast_raw = _on("dispatcher", Dispatcher.broadcast_raw)
    enqueue = _on("dispatcher", Dispatcher.enqueue)
    enqueue_many = _on("dispatcher", Dispatcher.enqueue_many)

    # -- schedules (docs/schedules.md) ------------------------------------------------------
    schedules = _on("scheduler", ScheduleOps.schedules)
    schedule = _on("scheduler", ScheduleOps.schedule)
    add_schedule = _on("scheduler", ScheduleOps.add_schedule)
    remove_schedule = _on("scheduler", ScheduleOps.remove_schedule)
    pause_schedule = _on("scheduler", ScheduleOps.pause_schedule)
    resume_schedule = _on("scheduler", ScheduleOps.resume_schedule)
    run_schedule_now = _on("scheduler", ScheduleOps.run_schedule_now)


async def _close_both(broker: Broker, backend: ResultBackend) -> None:
    try:
        await backend.close()
    finally:
        await broker.close()


__all__ = ["Ops"]
