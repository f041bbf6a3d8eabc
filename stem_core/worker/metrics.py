"""``WorkerMetrics``: a worker's Prometheus metrics (docs/metrics.md), fed by its executor
and lease keeper, in a registry of its own (never prometheus_client's global one), served
by ``stem_core.exposition.MetricsServer`` on a port of its own.

prometheus-client is imported only here and only when metrics are asked for (the
``metrics`` extra). Counters are thread-safe; the HTTP server answers from its thread.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..exposition import require_prometheus
from ..safetext import neutralise
from ..version import __version__

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

ENV_MAX_TASKS = "STEM_METRICS_MAX_TASKS"
DEFAULT_MAX_TASK_LABELS = 200
OTHER_TASK = "other"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1800.0, 3600.0)


def max_task_labels() -> int:
    raw = os.environ.get(ENV_MAX_TASKS)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_TASK_LABELS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_MAX_TASKS} must be an integer >= 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{ENV_MAX_TASKS} must be an integer >= 1, got {raw!r}")
    return value


class TaskLabels:
    """The ``task`` label of a name: registered names, the first ``cap`` distinct ones;
    anything else is ``other`` (names from the broker are not trusted to stay few)."""

    def __init__(self, registered: Callable[[str], bool], cap: int) -> None:
        self._registered = registered
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        if name in self._seen:
            return name
        if not self._registered(name):
            return OTHER_TASK
        with self._lock:
            if len(self._seen) >= self._cap:
                return OTHER_TASK
            self._seen.add(name)
        return name

    def label(self, name: str) -> str:
        """The label value: the name made visible (no escape sequence reaches a terminal)."""
        return neutralise(self(name))


class WorkerMetrics:
    """Every metric of one worker. ``registered(name)`` tells a task name of the app."""

    def __init__(self, *, worker_id: str, registered: Callable[[str], bool] = lambda _: True,
                 max_tasks: int | None = None, registry: "CollectorRegistry | None" = None) -> None:
        require_prometheus()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.worker_id = worker_id

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.task_label = TaskLabels(registered, max_tasks if max_tasks is not None else max_task_labels())
        reg = self.registry
        by_task = ("queue", "task")
        self.started = Counter("stem_tasks_started", "Task bodies started (each attempt).", by_task, registry=reg)
        self.succeeded = Counter("stem_tasks_succeeded", "Task runs that succeeded.", by_task, registry=reg)
        self.failed = Counter("stem_tasks_failed", "Task runs that ended the task as failed.", by_task, registry=reg)
        self.retried = Counter("stem_tasks_retried", "Failed task runs put back for another attempt.", by_task,
                               registry=reg)
        self.dead_lettered = Counter("stem_tasks_dead_lettered", "Deliveries moved to the dead letters.",
                                     (*by_task, "reason"), registry=reg)
        self.cancelled = Counter("stem_tasks_cancelled", "Tasks written as cancelled (revoked).", by_task, registry=reg)
        self.duration = Histogram("stem_task_duration_seconds", "Run time of task bodies.", by_task,
                                  buckets=DURATION_BUCKETS, registry=reg)
        self.held = Gauge("stem_worker_tasks_held", "Deliveries held now (running and reserved).", registry=reg)
        self.active = Gauge("stem_worker_tasks_active", "Task bodies running now.", registry=reg)
        self.concurrency = Gauge("stem_worker_concurrency", "Concurrency slots of the worker.", registry=reg)
        self.renewals = Counter("stem_lease_renewals", "Lease renewals that succeeded.", registry=reg)
        self.renewal_failures = Counter("stem_lease_renewal_failures", "Lease renewals that failed.", registry=reg)
        self.leases_lost = Counter("stem_leases_lost", "Leases found taken by another consumer.", registry=reg)
        self.up = Gauge("stem_worker_up", "1 while the worker runs, 0 once it is stopping.", registry=reg)
        info = Gauge("stem_worker_info", "The worker's id and Stem's version (always 1).", ("worker", "version"),
                     registry=reg)
        info.labels(worker=worker_id, version=__version__).set(1)

    def labels(self, queue: str, task: str) -> dict[str, str]:
        return {"queue": queue, "task": self.task_label.label(task)}

    # -- events (called on the worker's event loop) ----------------------------------

    def task_started(self, queue: str, task: str) -> None:
        self.started.labels(**self.labels(queue, task)).inc()
        self.active.inc()

    def task_ran(self, queue: str, task: str, seconds: float | None) -> None:
        self.active.dec()
        if seconds is not None:
            self.duration.labels(**self.labels(queue, task)).observe(max(0.0, seconds))

    def task_outcome(self, outcome: str, queue: str, task: str, reason: str | None = None) -> None:
        labels = self.labels(queue, task)
        if outcome == "dead-lettered":
            self.dead_lettered.labels(**labels, reason=reason or "unknown").inc()
        else:
            {"succeeded": self.succeeded, "failed": self.failed, "retried": self.retried,
             "cancelled": self.cancelled}[outcome].labels(**labels).inc()


__all__ = ["DURATION_BUCKETS", "OTHER_TASK", "TaskLabels", "WorkerMetrics"]

