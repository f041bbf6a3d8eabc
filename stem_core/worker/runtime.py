"""``Worker``: consumes the app's queues and runs tasks until told to stop.

Layout of one running worker (all on one event loop; sync bodies in daemon threads):

* fetch supervisor: one task subscription over the un-paused queues, reopened when the
  paused set changes (deliveries of the old subscription stay held and renewed, so for
  one task duration after a pause/resume the worker may hold up to 2 x ``prefetch``);
* one handler task per held delivery, waiting for one of ``concurrency`` slots, then
  ``Executor.process``;
* ``LeaseKeeper`` renewing every held lease; heartbeat loop (heartbeat + refresh of the
  persisted pause/revoke records); control subscription on ``<ns>.control``;
* ``ControlState``: the pauses, revocations and stop request that the commands, signals
  and heartbeats change and everything above obeys;
* burst mode: a watcher that stops the worker once its queues are drained.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from ..clock import monotonic, utcnow
from ..contract import WorkerHeartbeat
from ..envelope import Delivery, validate_name
from ..errors import StemError
from ..logs import bind_for_context
from ..settings import DEFAULT_MAX_DELIVERIES, ENV_MAX_DELIVERIES, HEARTBEAT_INTERVAL_SECONDS
from .. import signing
from .burst import BURST_CHECK_INTERVAL_S, queues_drained
from .commands import CommandTarget
from .control_state import ControlState
from .execution import RETRY_NOT_SIGNED, Counters, Executor
from .heartbeat import GONE_HEARTBEAT_TTL_S, build_heartbeat
from .held import ACTIVE, RESERVED, SETTLED, Held, HeldSet, lease_deadline
from .leases import LeaseKeeper
from .listener import ControlListener
from .threads import ABANDONED_THREAD_HEADROOM, ThreadBridge

if TYPE_CHECKING:
    from ..app import Stem
    from .metrics import WorkerMetrics

log = logging.getLogger("stem.worker")

PREFETCH_MULTIPLIER = 2
SHUTDOWN_GRACE_SECONDS = 30.0
# After a broker error in the fetch loop, try again after this long.
FETCH_RETRY_S = 1.0
# A result backend that does not answer at startup is asked again after this long.
STARTUP_RETRY_S = 1.0
# Hard shutdown (and the end of a soft one) waits at most this long for hand-backs.
HARD_SETTLE_TIMEOUT_S = 5.0
CANCEL_RECHECK_S = 0.5
_SIGNAL_MODES = (("SIGTERM", "warm"), ("SIGINT", "soft"), ("SIGQUIT", "hard"))


class Worker:
    """Runs the tasks of ``app`` from ``queues`` (default: the queues of its tasks)."""

    def __init__(
        self,
        app: "Stem",
        *,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        prefetch: int | None = None,
        worker_id: str | None = None,
        burst: bool = False,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_SECONDS,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
        metrics: "WorkerMetrics | None" = None,
        max_deliveries: int | None = None,
    ) -> None:
        self.app = app
        self.max_deliveries = _max_deliveries(max_deliveries)
        self.queues = [validate_name(q) for q in dict.fromkeys(queues)] if queues else app.queues()
        self.concurrency = _positive_int(concurrency, "concurrency") if concurrency is not None else (os.cpu_count() or 1)
        self.prefetch = _positive_int(prefetch, "prefetch") if prefetch is not None else self.concurrency * PREFETCH_MULTIPLIER
        self._prefetch_given = prefetch is not None
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        if not isinstance(self.worker_id, str) or len(self.worker_id) > 200:
            raise ValueError("worker_id must be a string of at most 200 characters")
        self.burst = bool(burst)
        self.heartbeat_interval = _positive_float(heartbeat_interval, "heartbeat_interval")
        self.shutdown_grace = _positive_float(shutdown_grace, "shutdown_grace", allow_zero=True)
        self.counters = Counters()
        self.held = HeldSet()
        self.control = ControlState(worker_id=self.worker_id, queues=self.queues, held=self.held,
                                    shutdown_grace=self.shutdown_grace)
        self.started_at = utcnow()
        # Set once the worker has read its persisted state, written its first heartbeat
        # and started fetching.
        self.ready = asyncio.Event()
        self._signals: list[int] = []
        self._running = False
        self.signer: signing.Signer | None = None
        # Prometheus metrics (docs/metrics.md): None, or a WorkerMetrics this worker feeds.
        self.metrics = metrics

    # -- public control -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.control.stopping

    @property
    def stop_mode(self) -> str | None:
        return self.control.stop_mode

    @property
    def exit_code(self) -> int:
        """1 after a hard stop (tasks were handed back unfinished), else 0."""
        return 1 if self.control.stop_mode == "hard" else 0

    @property
    def paused(self) -> frozenset[str]:
        """The queues paused for this worker now."""
        return self.control.paused

    def request_stop(self, mode: str = "warm") -> None:
        """Ask the worker to stop: ``warm`` finishes running tasks, ``soft`` interrupts
        them after the grace period, ``hard`` hands everything back now. Only escalates."""
        self.control.request_stop(mode)

    def install_signal_handlers(self) -> None:
        """SIGTERM warm, SIGINT soft, SIGQUIT or any second signal hard (call inside the loop)."""
        loop = asyncio.get_running_loop()
        for name, mode in _SIGNAL_MODES:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            loop.add_signal_handler(sig, self._on_signal, name, mode)
            self._signals.append(sig)

    def _on_signal(self, name: str, mode: str) -> None:
        if self.control.stopping:
            mode = "hard"
        log.warning("worker %s received %s: %s shutdown", self.worker_id, name, mode, extra={"worker_id": self.worker_id})
        self.control.request_stop(mode)

    def heartbeat(self) -> WorkerHeartbeat:
        """What this worker reports about itself now."""
        return build_heartbeat(self.control, namespace=self.app.namespace, concurrency=self.concurrency,
                               held=self.held, counters=self.counters, interval=self.heartbeat_interval)

    # -- run ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped (signal, ``request_stop``, control ``shutdown``, burst drained)."""
        if self._running:
            raise StemError("this worker is already running")
        self._running = True
        # Every line this run logs names the worker (--log-format json).
        bind_for_context(worker_id=self.worker_id)
        # This worker's keys, fixed for its run (a key rotation rolls workers).
        self.signer = signing.current()
        if self.signer is not None and not self.signer.can_sign:
            log.warning("worker %s verifies signatures but cannot sign (%s): its retries are dead-lettered as %s "
                        "instead of being published unsigned", self.worker_id, self.signer.settings.describe(),
                        RETRY_NOT_SIGNED)
        await self.app.connect()
        self.broker, self.backend = self.app.broker, self.app.backend
        if not self._prefetch_given:
            self.prefetch = max(self.prefetch, self.broker.claim_batch)
        self.started_at = utcnow()
        self._bridge = ThreadBridge(asyncio.get_running_loop(), max_threads=self.concurrency + ABANDONED_THREAD_HEADROOM)
        self._slots = asyncio.Semaphore(self.concurrency)
        self.leases = LeaseKeeper(self.broker, self.held, on_lost=self._on_lease_lost, metrics=self.metrics)
        self._executor = Executor(
            app=self.app,
            broker=self.broker,
            backend=self.backend,
            worker_id=self.worker_id,
            bridge=self._bridge,
            leases=self.leases,
            counters=self.counters,
            revocation=self.control.revocation,
            signer=self.signer,
            metrics=self.metrics,
            max_deliveries=self.max_deliveries,
        )
        if self.metrics is not None:
            self.metrics.concurrency.set(self.concurrency)
            self.metrics.held.set_function(lambda: len(self.held))
        background: list[asyncio.Task[Any]] = []
        try:
            if self.broker.capabilities.broadcast:
                target = CommandTarget(control=self.control, held=self.held, counters=self.counters, leases=self.leases,
                                       concurrency=self.concurrency, prefetch=self.prefetch, started_at=self.started_at)
                listener = ControlListener(self.broker, target, backend=self.backend, signer=self.signer)
                background.append(asyncio.create_task(listener.run()))
                await listener.await_ready()
            else:
                log.warning("the %s broker has no broadcast: control commands will not reach this worker", self.broker.scheme)
            await self._until_backend_answers()
            log.info(
                "worker %s ready: queues=%s concurrency=%d prefetch=%d loop=%s%s",
                self.worker_id, ",".join(self.queues), self.concurrency, self.prefetch,
                type(asyncio.get_running_loop()).__module__.split(".")[0], " burst" if self.burst else "",
            )
            background.append(asyncio.create_task(self.leases.run()))
            background.append(asyncio.create_task(self._heartbeat_loop()))
            if self.burst:
                background.append(asyncio.create_task(self._burst_loop()))
            fetcher = asyncio.create_task(self._fetch_supervisor())
            background.append(fetcher)
            self.ready.set()
            if self.metrics is not None:
                self.metrics.up.set(1)
            while not self.stopping:
                await self.control.stop_changed.wait()
            if self.metrics is not None:
                self.metrics.up.set(0)
            log.info("worker %s stopping (%s)", self.worker_id, self.control.stop_mode)
            await cancel_and_wait(fetcher)
            await self._shutdown()
        finally:
            if self.metrics is not None:
                self.metrics.up.set(0)
            await cancel_and_wait(*background)
            await self._goodbye()
            self._bridge.close()
            loop = asyncio.get_running_loop()
            for sig in self._signals:
                loop.remove_signal_handler(sig)
            self._signals.clear()
            log.info("worker %s stopped: %s", self.worker_id, self.counters.to_dict())

    # -- fetching -------------------------------------------------------------------

    async def _fetch_supervisor(self) -> None:
        while not self.stopping:
            self.control.pauses_changed.clear()
            queues = self.control.active_queues()
            if not queues:
                await self.control.pauses_changed.wait()
                continue
            fetch = asyncio.create_task(self._fetch(queues))
            change = asyncio.create_task(self.control.pauses_changed.wait())
            try:
                await asyncio.wait({fetch, change}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(fetch, change)
            # Only now that the old subscription is closed (it would claim them again):
            # reserved deliveries of newly paused queues go back.
            for held in self.held.in_state(RESERVED):
                if self.control.is_paused(held.queue) and held.handler is not None:
                    held.handler.cancel()
            if not fetch.cancelled() and fetch.exception() is not None:
                exc = fetch.exception()
                log.warning("fetching from %s failed: %s; retrying in %.0f s", ",".join(queues), exc, FETCH_RETRY_S,
                            exc_info=not isinstance(exc, StemError))
                await asyncio.sleep(FETCH_RETRY_S)

    async def _fetch(self, queues: list[str]) -> None:
        # Pull continuously (the broker enforces prefetch) so no claimed delivery waits
        # unrenewed inside the iterator.
        # Claim in batches: once the reserved buffer is used up rather than per freed
        # slot (half the claim round trips; the running tasks cover the claim's latency).
        refill = max(1, min(self.prefetch - self.concurrency, self.prefetch // 2))
        async for delivery in self.broker.consume(queues, prefetch=self.prefetch, consumer=self.worker_id, refill=refill):
            self._accept(delivery)

    def _accept(self, delivery: Delivery) -> None:
        lease = self.broker.lease_for(delivery.envelope)
        held = Held(delivery=delivery, lease_seconds=lease, lease_expires_at=lease_deadline(delivery, lease))
        held.schedule_renewal(held.lease_expires_at)
        self.held.add(held)
        self.leases.track(held)
        held.handler = asyncio.create_task(self._handle(held))

    async def _handle(self, held: Held) -> None:
        # This handler is an asyncio task of its own: the fields stay with its log lines
        # (and those of the task body it starts).
        env = held.delivery.envelope
        bind_for_context(task_id=env.id, task_name=env.name, queue=held.queue, attempt=env.attempt)
        try:
            if self.stopping or self.control.is_paused(held.queue):
                await self._executor.give_back(held)
                return
            await self._slots.acquire()
            slot = _Slot(self._slots)
            try:
                if not await self.leases.confirm(held):
                    await self._drop(held)
                elif self.stopping or self.control.is_paused(held.queue):
                    await self._executor.give_back(held)
                else:
                    held.state = ACTIVE
                    await self._executor.process(held, slot.release)
            finally:
                slot.release()
        except asyncio.CancelledError:
            # Shutdown, a pause of this queue, or a lost lease while reserved.
            await self._release(held)
        except Exception:  # noqa: BLE001 - keep the worker alive; the delivery goes back
            log.exception("unexpected error while handling task %s", held.id)
            await self._release(held)
        finally:
            self.held.discard(held)

    async def _release(self, held: Held) -> None:
        try:
            if held.lease_lost:
                await self._drop(held)
            else:
                await self._executor.give_back(held)
        except StemError as exc:
            log.warning("could not hand task %s back (%s); it returns when its lease expires", held.id, exc)

    async def _drop(self, held: Held) -> None:
        # Another consumer holds it now; nack with our stale receipt only frees the slot
        # (and, should the receipt still be valid, puts the message back: never deletes).
        await self.broker.nack(held.delivery, requeue=True)

    def _on_lease_lost(self, held: Held) -> None:
        if held.state == RESERVED:
            log.warning("lost the lease of reserved task %s; it is left to its new holder", held.id)
            if held.handler is not None:
                held.handler.cancel()
        elif held.body is None or not held.body.done():  # a finished body is being settled
            log.warning("lost the lease of running task %s (%s): another worker may run it too", held.id, held.name)

    # -- heartbeat, burst, control --------------------------------------------------

    async def _write_heartbeat(self) -> None:
        await self.backend.set_heartbeat(self.heartbeat())

    async def _until_backend_answers(self) -> None:
        """Read the control state (pauses, revocations) and write the first heartbeat,
        again and again with a warning, until the result backend answers or the worker is
        told to stop: a backend that is down or locked at startup (a SQLite file whose
        writer lock a frozen process holds) is a wait, not a crash. No task runs before
        the control state is known."""
        while not self.stopping:
            try:
                await self.control.refresh(self.backend)
                await self._write_heartbeat()
                return
            except StemError as exc:
                log.warning("worker %s cannot reach the result backend yet (%s); trying again in %.0f s",
                            self.worker_id, exc, STARTUP_RETRY_S)
            await asyncio.sleep(STARTUP_RETRY_S)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for step in (self._refresh_control, self._write_heartbeat):
                try:
                    await step()
                except StemError as exc:
                    log.warning("heartbeat: %s", exc)

    async def _refresh_control(self) -> None:
        await self.control.refresh(self.backend)

    async def _goodbye(self) -> None:
        try:
            await self.backend.set_heartbeat(self.heartbeat(), ttl=GONE_HEARTBEAT_TTL_S)
        except StemError as exc:
            log.warning("could not write the final heartbeat: %s", exc)

    async def _burst_loop(self) -> None:
        # Drained on two checks in a row: a broker's counts are read queue by queue, so a
        # message moving between two of them while they are read (RabbitMQ's delay levels
        # dead-lettering a retry onward to its queue) can be missed by one check, not by two.
        drained_before = False
        while not self.stopping:
            await asyncio.sleep(BURST_CHECK_INTERVAL_S)
            drained = len(self.held) == 0 and await queues_drained(self.broker, self.control.active_queues())
            if drained and drained_before:
                log.info("worker %s: queues drained, stopping (burst)", self.worker_id)
                self.request_stop("warm")
            drained_before = drained

    # -- shutdown -------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for held in self.held.in_state(RESERVED):
            if held.handler is not None:
                held.handler.cancel()
        while True:
            handlers = [h.handler for h in self.held if h.handler is not None and not h.handler.done()]
            if not handlers:
                return
            mode = self.control.stop_mode
            if mode == "hard":
                self._interrupt_active()
                await asyncio.wait(handlers, timeout=HARD_SETTLE_TIMEOUT_S)
                return
            timeout = None if mode == "warm" else max(0.0, (self.control.soft_deadline or monotonic()) - monotonic())
            self.control.stop_changed.clear()
            escalated = asyncio.create_task(self.control.stop_changed.wait())
            done, _ = await asyncio.wait([*handlers, escalated], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            escalated.cancel()
            if not done and mode == "soft":
                log.warning("grace period over: interrupting %d running task(s)", len(handlers))
                self._interrupt_active()
                await asyncio.wait(handlers, timeout=HARD_SETTLE_TIMEOUT_S)
                return

    def _interrupt_active(self) -> None:
        for held in self.held:
            if held.state == SETTLED:
                continue
            if held.state == ACTIVE:
                held.cancel_reason = held.cancel_reason or "shutdown"
                if held.body is not None:
                    held.body.cancel()
            elif held.handler is not None:
                held.handler.cancel()


class _Slot:
    """One acquired concurrency slot, released exactly once."""

    __slots__ = ("_semaphore", "_held")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


async def cancel_and_wait(*tasks: "asyncio.Task[Any]") -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again if one swallowed it
    (``asyncio.wait_for`` on Python 3.11 can lose a cancel that races its inner future)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RECHECK_S)


def _max_deliveries(value: int | None) -> int:
    """The worker's delivery limit: the argument, else ``STEM_MAX_DELIVERIES``, else the
    default; 0 means no limit."""
    if value is None:
        raw = os.environ.get(ENV_MAX_DELIVERIES, "").strip()
        if not raw:
            return DEFAULT_MAX_DELIVERIES
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_MAX_DELIVERIES} must be a whole number >= 0, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_deliveries must be a whole number >= 0 (0: no limit), got {value!r}")
    return value


def _positive_int(value: object, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    return value


def _positive_float(value: object, label: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{label} must be positive seconds, got {value!r}")
    return float(value)


__all__ = ["PREFETCH_MULTIPLIER", "SHUTDOWN_GRACE_SECONDS", "Worker"]
