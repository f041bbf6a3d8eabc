"""``WorkerMetrics``: a worker's Prometheus metrics (docs/metrics.md), fed by its executor
and lease keeper, in a registry of its own (never prometheus_client's global one), served
by ``serve_metrics`` on a port of its own.

prometheus-client is imported only here and only when metrics are asked for (the
``metrics`` extra). Counters are thread-safe; the HTTP server answers from its thread.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigurationError
from ..version import __version__

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

ENV_METRICS_PORT = "STEM_METRICS_PORT"
ENV_METRICS_ADDR = "STEM_METRICS_ADDR"
ENV_MAX_TASKS = "STEM_METRICS_MAX_TASKS"
DEFAULT_METRICS_ADDR = "0.0.0.0"
DEFAULT_MAX_TASK_LABELS = 200
OTHER_TASK = "other"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1800.0, 3600.0)


def require_prometheus() -> None:
    """``ConfigurationError`` naming the extra when prometheus-client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError("metrics need prometheus-client: pip install 'stem-queue[metrics]'") from None


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


class WorkerMetrics:
    """Every metric of one worker. ``registered(name)`` tells a task name of the app."""

    def __init__(self, *, worker_id: str, registered: Callable[[str], bool] = lambda _: True,
                 max_tasks: int | None = None, registry: "CollectorRegistry | None" = None) -> None:
        require_prometheus()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        return {"queue": queue, "task": self.task_label(task)}

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


class MetricsServer:
    """prometheus_client's HTTP server for one registry, on a thread; ``close()`` stops it."""

    def __init__(self, registry: "CollectorRegistry", port: int, addr: str = DEFAULT_METRICS_ADDR) -> None:
        from prometheus_client import start_http_server

        # OSError (EADDRINUSE, a bad address) goes to the caller, which says it in one line.
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.port = int(self._server.server_address[1])
        self.addr = addr

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_port(value: object, label: str = "--metrics-port") -> int:
    """A TCP port 0..65535 (0: any free port)."""
    try:
        port = int(str(value))
    except ValueError:
        raise ValueError(f"{label} must be a port number 0-65535, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{label} must be a port number 0-65535, got {value!r}")
    return port


__all__ = [
    "DEFAULT_METRICS_ADDR",
    "DURATION_BUCKETS",
    "ENV_METRICS_ADDR",
    "ENV_METRICS_PORT",
    "MetricsServer",
    "OTHER_TASK",
    "TaskLabels",
    "WorkerMetrics",
    "parse_port",
    "require_prometheus",
]

