"""``Worker``: consumes the app's queues and runs tasks until told to stop.

Layout of one running worker (all on one event loop; sync bodies in daemon threads):

* fetch supervisor: one task subscription over the un-paused queues, reopened when the
  paused set changes (deliveries of the old subscription stay held and renewed, so for
  one task duration after a pause/resume the worker may hold up to 2 x ``prefetch``);
* one handler task per held delivery, waiting for one of ``concurrency`` slots, then
  ``Executor.process``;
* ``LeaseKeeper`` renewing every held lease; heartbeat loop (heartbeat + refresh of the
  persisted pause/revoke records); control subscription on ``<ns>.control``;
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
from ..control.pause import pause_active, paused_queues
from ..control.revoke import revoked_tasks
from ..envelope import Delivery, validate_name
from ..errors import StemError, Unsupported
from ..settings import HEARTBEAT_INTERVAL_SECONDS
from .execution import Counters, Executor
from .heartbeat import GONE_HEARTBEAT_TTL_S, build_heartbeat
from .held import ACTIVE, RESERVED, SETTLED, Held, HeldSet, lease_deadline
from .leases import LeaseKeeper
from .listener import ControlListener
from .retry import RETRY_MAX_SECONDS
from .threads import ABANDONED_THREAD_HEADROOM, ThreadBridge

if TYPE_CHECKING:
    from ..app import Stem

log = logging.getLogger("stem.worker")

PREFETCH_MULTIPLIER = 2
SHUTDOWN_GRACE_SECONDS = 30.0
# After a broker error in the fetch loop, try again after this long.
FETCH_RETRY_S = 1.0
# Hard shutdown (and the end of a soft one) waits at most this long for hand-backs.
HARD_SETTLE_TIMEOUT_S = 5.0
BURST_CHECK_INTERVAL_S = 0.1
CANCEL_RECHECK_S = 0.5
# Burst mode keeps waiting for delayed messages due within this horizon (retries included).
BURST_DELAYED_HORIZON_S = RETRY_MAX_SECONDS
BURST_PEEK_LIMIT = 1000
STOP_MODES = {"warm": 1, "soft": 2, "hard": 3}
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
    ) -> None:
        self.app = app
        self.queues = [validate_name(q) for q in dict.fromkeys(queues)] if queues else app.queues()
        self.concurrency = _positive_int(concurrency, "concurrency") if concurrency is not None else (os.cpu_count() or 1)
        self.prefetch = _positive_int(prefetch, "prefetch") if prefetch is not None else self.concurrency * PREFETCH_MULTIPLIER
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        if not isinstance(self.worker_id, str) or len(self.worker_id) > 200:
            raise ValueError("worker_id must be a string of at most 200 characters")
        self.burst = bool(burst)
        self.heartbeat_interval = _positive_float(heartbeat_interval, "heartbeat_interval")
        self.shutdown_grace = _positive_float(shutdown_grace, "shutdown_grace", allow_zero=True)
        self.counters = Counters()
        self.held = HeldSet()
        self.paused: set[str] = set()
        self.started_at = utcnow()
        self.exit_code = 0
        # Set once the worker has read its persisted state, written its first heartbeat
        # and started fetching.
        self.ready = asyncio.Event()
        self._pause_records: dict[str, dict[str, Any]] = {}
        self._revoked: dict[str, dict[str, Any]] = {}
        self._stop_mode: str | None = None
        self._stop_changed = asyncio.Event()
        self._soft_deadline: float | None = None
        self._resubscribe = asyncio.Event()
        self._signals: list[int] = []
        self._running = False

    # -- public control -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop_mode is not None

    @property
    def stop_mode(self) -> str | None:
        return self._stop_mode

    def request_stop(self, mode: str = "warm") -> None:
        """Ask the worker to stop: ``warm`` finishes running tasks, ``soft`` interrupts
        them after the grace period, ``hard`` hands everything back now. Only escalates."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {', '.join(STOP_MODES)}, got {mode!r}")
        if self._stop_mode is not None and STOP_MODES[mode] <= STOP_MODES[self._stop_mode]:
            return
        self._stop_mode = mode
        if mode == "soft":
            self._soft_deadline = monotonic() + self.shutdown_grace
        if mode == "hard":
            self.exit_code = 1
        self._stop_changed.set()

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
        if self._stop_mode is not None:
            mode = "hard"
        log.warning("worker %s received %s: %s shutdown", self.worker_id, name, mode)
        self.request_stop(mode)

    def active_queues(self) -> list[str]:
        return [q for q in self.queues if q not in self.paused]

    def paused_queues(self) -> list[str]:
        """This worker's queues that are paused for it now."""
        return [q for q in self.queues if q in self.paused]

    def revocation(self, task_id: str) -> dict[str, Any] | None:
        return self._revoked.get(task_id)

    def revoked_ids(self) -> list[str]:
        return list(self._revoked)

    def uptime(self) -> float:
        return (utcnow() - self.started_at).total_seconds()

    # -- run ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped (signal, ``request_stop``, control ``shutdown``, burst drained)."""
        if self._running:
            raise StemError("this worker is already running")
        self._running = True
        await self.app.connect()
        self.broker, self.backend = self.app.broker, self.app.backend
        self.started_at = utcnow()
        self._bridge = ThreadBridge(asyncio.get_running_loop(), max_threads=self.concurrency + ABANDONED_THREAD_HEADROOM)
        self._slots = asyncio.Semaphore(self.concurrency)
        self.leases = LeaseKeeper(self.broker, self.held, on_lost=self._on_lease_lost)
        self._executor = Executor(
            app=self.app,
            broker=self.broker,
            backend=self.backend,
            worker_id=self.worker_id,
            bridge=self._bridge,
            leases=self.leases,
            counters=self.counters,
            revocation=self.revocation,
        )
        background: list[asyncio.Task[Any]] = []
        try:
            if self.broker.capabilities.broadcast:
                listener = ControlListener(self)
                background.append(asyncio.create_task(listener.run()))
                await listener.await_ready()
            else:
                log.warning("the %s broker has no broadcast: control commands will not reach this worker", self.broker.scheme)
            await self._refresh_records()
            await self._write_heartbeat()
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
            while not self.stopping:
                await self._stop_changed.wait()
            log.info("worker %s stopping (%s)", self.worker_id, self._stop_mode)
            await cancel_and_wait(fetcher)
            await self._shutdown()
        finally:
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
            self._resubscribe.clear()
            queues = self.active_queues()
            if not queues:
                await self._resubscribe.wait()
                continue
            fetch = asyncio.create_task(self._fetch(queues))
            change = asyncio.create_task(self._resubscribe.wait())
            try:
                await asyncio.wait({fetch, change}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(fetch, change)
            # Only now that the old subscription is closed (it would claim them again):
            # reserved deliveries of newly paused queues go back.
            for held in self.held.in_state(RESERVED):
                if held.queue in self.paused and held.handler is not None:
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
        try:
            if self.stopping or held.queue in self.paused:
                await self._executor.give_back(held)
                return
            await self._slots.acquire()
            slot = _Slot(self._slots)
            try:
                if held.lease_lost:
                    await self._drop(held)
                elif self.stopping or held.queue in self.paused:
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

    # -- pause / revoke state -------------------------------------------------------

    def set_pauses(self, records: dict[str, dict[str, Any]]) -> None:
        """Replace the known pause records and apply them."""
        self._pause_records = dict(records)
        self._apply_pauses()

    def merge_pauses(self, records: dict[str, dict[str, Any]]) -> None:
        self._pause_records.update(records)
        self._apply_pauses()

    def remove_pauses(self, queues: list[str]) -> None:
        for queue in queues:
            self._pause_records.pop(queue, None)
        self._apply_pauses()

    def _apply_pauses(self) -> None:
        now = utcnow()
        paused = {q for q, r in self._pause_records.items() if pause_active(r, self.worker_id, now=now)}
        if paused == self.paused:
            return
        ours = set(self.queues)
        if (paused ^ self.paused) & ours:
            log.info("worker %s: paused queues now %s", self.worker_id, ",".join(sorted(paused & ours)) or "none")
            self._resubscribe.set()
        self.paused = paused

    def apply_revocations(self, records: dict[str, dict[str, Any]], *, replace: bool = False) -> list[str]:
        """Remember revocations; cancel running tasks revoked with ``terminate``."""
        if replace:
            self._revoked = dict(records)
        else:
            self._revoked.update(records)
        terminated = []
        for task_id, record in records.items():
            if not record.get("terminate"):
                continue
            for held in self.held.by_task_id(task_id):
                if held.state == ACTIVE and held.cancel_reason is None:
                    held.cancel_reason = "revoked"
                    if held.body is not None:
                        held.body.cancel()
                    terminated.append(task_id)
        return terminated

    async def _refresh_records(self) -> None:
        self.set_pauses(await paused_queues(self.backend))
        self.apply_revocations(await revoked_tasks(self.backend), replace=True)

    # -- heartbeat, burst, control --------------------------------------------------

    async def _write_heartbeat(self) -> None:
        await self.backend.set_heartbeat(build_heartbeat(self))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for step in (self._refresh_records, self._write_heartbeat):
                try:
                    await step()
                except StemError as exc:
                    log.warning("heartbeat: %s", exc)

    async def _goodbye(self) -> None:
        try:
            await self.backend.set_heartbeat(build_heartbeat(self), ttl=GONE_HEARTBEAT_TTL_S)
        except StemError as exc:
            log.warning("could not write the final heartbeat: %s", exc)

    async def _burst_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(BURST_CHECK_INTERVAL_S)
            if len(self.held) == 0 and await self._drained():
                log.info("worker %s: queues drained, stopping (burst)", self.worker_id)
                self.request_stop("warm")

    async def _drained(self) -> bool:
        queues = self.active_queues()
        if not queues:
            return True
        horizon = utcnow().timestamp() + BURST_DELAYED_HORIZON_S
        with_delayed: list[str] = []
        for stats in await self.broker.queue_stats(queues):
            if stats.pending or stats.inflight:
                return False
            if stats.delayed:
                try:
                    waiting = await self.broker.peek(stats.queue, state="delayed", limit=BURST_PEEK_LIMIT)
                except Unsupported:
                    return False
                if any(m.envelope.not_before is None or m.envelope.not_before.timestamp() <= horizon for m in waiting):
                    return False
                with_delayed.append(stats.queue)
        # A delayed task that fell due between the count and the peek is no longer in the
        # peek (a broker may even move it to ready while peeking): count again, so it is
        # seen as pending rather than missed.
        if with_delayed:
            for stats in await self.broker.queue_stats(with_delayed):
                if stats.pending or stats.inflight:
                    return False
        return True

    # -- shutdown -------------------------------------------------------------------

    async def _shutdown(self) -> None:
        for held in self.held.in_state(RESERVED):
            if held.handler is not None:
                held.handler.cancel()
        while True:
            handlers = [h.handler for h in self.held if h.handler is not None and not h.handler.done()]
            if not handlers:
                return
            mode = self._stop_mode
            if mode == "hard":
                self._interrupt_active()
                await asyncio.wait(handlers, timeout=HARD_SETTLE_TIMEOUT_S)
                return
            timeout = None if mode == "warm" else max(0.0, (self._soft_deadline or monotonic()) - monotonic())
            self._stop_changed.clear()
            escalated = asyncio.create_task(self._stop_changed.wait())
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


def _positive_int(value: object, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    return value


def _positive_float(value: object, label: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{label} must be positive seconds, got {value!r}")
    return float(value)


__all__ = ["PREFETCH_MULTIPLIER", "SHUTDOWN_GRACE_SECONDS", "STOP_MODES", "Worker"]
