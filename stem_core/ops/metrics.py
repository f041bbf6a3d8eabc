"""``QueueCollector``: the queue figures of ``stem_core.ops`` as Prometheus metrics, read
on scrape (``stem metrics``; docs/metrics.md).

prometheus_client calls ``collect()`` from its HTTP thread; the figures are read on the
event loop that owns the ``Ops`` (``asyncio.run_coroutine_threadsafe``), at most once per
``cache`` seconds, concurrent scrapes sharing one read. A read slower than ``timeout``
(a broker that stopped answering) does not hang the scrape: it is answered with the last
figures and ``stem_exporter_scrape_success 0``, while the read goes on (bounded by
``timeout`` too) for a later scrape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any, Iterator, Sequence

from ..exposition import require_prometheus
from ..safetext import neutralise
from .api import Ops
from .models import Overview

log = logging.getLogger("stem.metrics")

ENV_MAX_QUEUES = "STEM_METRICS_MAX_QUEUES"
DEFAULT_MAX_QUEUES = 500
DEFAULT_CACHE_S = 2.0
DEFAULT_TIMEOUT_S = 10.0
STATES = ("pending", "delayed", "inflight", "dead")


def max_queue_labels() -> int:
    raw = os.environ.get(ENV_MAX_QUEUES)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_QUEUES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV_MAX_QUEUES} must be an integer >= 1, got {raw!r}")
    return value


class QueueCollector:
    """A prometheus_client collector over ``ops.overview()`` (``queues``: only those)."""

    def __init__(self, ops: Ops, loop: asyncio.AbstractEventLoop, *, queues: Sequence[str] | None = None,
                 cache: float = DEFAULT_CACHE_S, timeout: float = DEFAULT_TIMEOUT_S,
                 max_queues: int | None = None) -> None:
        require_prometheus()
        self._ops = ops
        self._loop = loop
        self._queues = list(queues) if queues is not None else None
        self._cache = cache
        self._timeout = timeout
        self._max_queues = max_queues if max_queues is not None else max_queue_labels()
        self._lock = threading.RLock()
        self._reading: concurrent.futures.Future[Overview] | None = None
        self._overview: Overview | None = None
        self._read_at = float("-inf")  # monotonic time of the last successful read
        self._success_at: float | None = None  # wall clock of the same
        self._duration = 0.0
        self._ok = False
        self._failing = False

    def describe(self) -> list[Any]:
        # Nothing to check at registration (collect() would read the broker).
        return []

    async def _read(self) -> Overview:
        started = time.monotonic()
        try:
            return await asyncio.wait_for(self._ops.overview(self._queues), self._timeout)
        finally:
            self._duration = time.monotonic() - started

    def refresh(self) -> None:
        """Read the figures now unless the cached ones are fresh (from any thread but the loop's)."""
        with self._lock:
            if self._reading is None:
                if time.monotonic() - self._read_at < self._cache:
                    return
                reading = self._reading = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
                reading.add_done_callback(self._done)
            else:
                reading = self._reading
        try:
            reading.result(self._timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                self._ok = False
            return
        except Exception:  # noqa: BLE001 - reported by _done; the scrape still answers
            pass
        # The waiter can wake before the future's callbacks ran: apply the outcome here too.
        self._done(reading)

    def _done(self, future: "concurrent.futures.Future[Overview]") -> None:
        with self._lock:
            if self._reading is not future:
                return  # already applied
            self._reading = None
            if future.cancelled():
                self._ok = False
                return
            exc = future.exception()
            if exc is not None:
                if self._ok or self._success_at is None and not self._failing:
                    # Once per outage, not once per scrape.
                    log.error("reading the queue figures failed: %s", exc if str(exc) else type(exc).__name__)
                self._ok = False
                self._failing = True
                return
            self._failing = False
            self._overview = future.result()
            self._read_at = time.monotonic()
            self._success_at = time.time()
            self._ok = True

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        self.refresh()
        with self._lock:
            overview, ok, duration, success_at = self._overview, self._ok, self._duration, self._success_at
        yield GaugeMetricFamily("stem_exporter_scrape_success", "1 when the last read of the queue figures succeeded.",
                                value=1 if ok else 0)
        yield GaugeMetricFamily("stem_exporter_scrape_duration_seconds", "How long the last read took.", value=duration)
        if success_at is not None:
            yield GaugeMetricFamily("stem_exporter_last_success_timestamp_seconds",
                                    "Unix time of the last successful read.", value=success_at)
        if overview is None:
            return
        depth = GaugeMetricFamily("stem_queue_depth", "Messages in a queue per state.", labels=("queue", "state"))
        age = GaugeMetricFamily("stem_queue_oldest_age_seconds", "Age of the oldest pending message.", labels=("queue",))
        paused = GaugeMetricFamily("stem_queue_paused", "1 when the queue is paused for all workers.", labels=("queue",))
        workers = GaugeMetricFamily("stem_queue_workers", "Live workers serving the queue.", labels=("queue",))
        for row in overview.queues[: self._max_queues]:
            queue = neutralise(row.queue)
            for state in STATES:
                value = getattr(row, state)
                if value is not None:
                    depth.add_metric((queue, state), value)
            if row.oldest_pending_age is not None:
                age.add_metric((queue,), row.oldest_pending_age)
            paused.add_metric((queue,), 1 if row.paused else 0)
            workers.add_metric((queue,), len(row.workers))
        yield from (depth, age, paused, workers)
        yield GaugeMetricFamily("stem_workers_live", "Live workers (fresh heartbeats) in the namespace.",
                                value=overview.live_workers)


__all__ = ["DEFAULT_CACHE_S", "DEFAULT_MAX_QUEUES", "DEFAULT_TIMEOUT_S", "QueueCollector"]
