"""One delivery from "slot acquired" to settled: statuses, the task body, retry, dead letter.

Order is the guarantee: the final status is written *before* the broker is told (ack,
nack, dead letter), so a crash in between re-runs the task and never loses a result
(``Broker.ack_with_status`` does status and ack in one round trip when the backend shares
the broker's server, in the same order). If the status cannot be written at all, the
delivery is nacked so it runs again; when the backend refused it for good
(``StorageRejected``: a value too long, a constraint), the worker gives up after
``STATUS_WRITE_MAX_TRIES`` deliveries and dead-letters the task (``status-write-failed``)
instead of retrying it every second forever.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from .._aio import retrieve
from ..clock import monotonic, to_iso, utcnow
from ..contract import Broker, ResultBackend, TaskState
from ..errors import SignatureInvalid, StemError, StorageRejected, Unsupported
from ..limits import STATUS_WRITE_MAX_TRIES
from ..signing import SIGNATURE_INVALID, Signer
from .context import TaskContext
from .held import ACTIVE, SETTLED, Held
from .leases import LeaseKeeper
from .retry import Reject, Retry, TimeLimitExceeded, backoff_seconds
from .threads import ThreadBridge

if TYPE_CHECKING:
    from ..app import Stem, Task
    from .metrics import WorkerMetrics

log = logging.getLogger("stem.worker")
# One line per task outcome (docs/metrics.md): started, succeeded, retried, failed,
# dead-lettered, cancelled, with the task's fields for --log-format json.
task_log = logging.getLogger("stem.task")

# Dead-letter reasons written by the worker.
MAX_RETRIES_EXHAUSTED = "max-retries-exhausted"
UNREGISTERED_TASK = "unregistered-task"
INVALID_ENVELOPE = "invalid-envelope"
DELIVERY_LIMIT_EXCEEDED = "delivery-limit-exceeded"
INVALID_RESULT = "invalid-result"
REJECTED = "rejected"
STATUS_WRITE_FAILED = "status-write-failed"
# A verify-only worker (Ed25519 public keys, no private key) cannot re-sign a retry: the
# copy with attempt + 1 would fail every worker's check, so it is dead-lettered instead.
RETRY_NOT_SIGNED = "retry-not-signed"

# After cancelling an async body, how long its cleanup (finally blocks) may take.
CANCEL_GRACE_S = 1.0
# When a status cannot be stored, the delivery comes back after this delay.
STATUS_RETRY_DELAY_S = 1.0
TRACEBACK_MAX_CHARS = 16_000
# Tasks whose status writes were refused, remembered per worker (oldest forgotten first).
REJECTED_MEMORY = 10_000


@dataclass(slots=True)
class Counters:
    """What a worker reports in heartbeats and ``stats``."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0

    def to_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def error_info(exc: BaseException) -> dict[str, Any]:
    """``{type, message, traceback}`` for the status and the dead letter."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > TRACEBACK_MAX_CHARS:
        text = "...\n" + text[-TRACEBACK_MAX_CHARS:]
    return {"type": type(exc).__name__, "message": str(exc), "traceback": text}


def _problem(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": None}


class Executor:
    """Runs held deliveries for one worker."""

    def __init__(
        self,
        *,
        app: "Stem",
        broker: Broker,
        backend: ResultBackend,
        worker_id: str,
        bridge: ThreadBridge,
        leases: LeaseKeeper,
        counters: Counters,
        revocation: Callable[[str], dict[str, Any] | None],
        signer: Signer | None = None,
        metrics: "WorkerMetrics | None" = None,
        max_deliveries: int = 0,
    ) -> None:
        self.app = app
        self.max_deliveries = max_deliveries
        self.metrics = metrics
        self.signer = signer
        self.broker = broker
        self.backend = backend
        self.worker_id = worker_id
        self.bridge = bridge
        self.leases = leases
        self.counters = counters
        self.revocation = revocation
        # Task id -> deliveries whose status write the backend refused for good.
        self._refused: OrderedDict[str, int] = OrderedDict()

    # -- entry point ----------------------------------------------------------------

    async def process(self, held: Held, release_slot: Callable[[], None] = lambda: None) -> None:
        """Run ``held`` (already in a concurrency slot) and settle it, whatever happens.

        ``release_slot`` is called as soon as the body is over: writing the final status
        and acking are bookkeeping, and the next task may start meanwhile (the number of
        deliveries held, settling ones included, stays bounded by prefetch).
        """
        env = held.delivery.envelope
        held.meta = {"task": env.name, "queue": held.queue, "max_retries": env.max_retries, "worker": self.worker_id}
        try:
            await self._process(held, release_slot)
            self.counters.processed += 1
        except asyncio.CancelledError:
            raise
        except StorageRejected as exc:
            await self._refused_write(held, exc)
        except Exception as exc:  # noqa: BLE001 - a server failure or a bug outside the task body
            log.error("task %s (%s): %s; it will run again", env.id, env.name, exc, exc_info=not isinstance(exc, StemError))
            try:
                await self.broker.nack(held.delivery, requeue=True, delay=STATUS_RETRY_DELAY_S)
            except StemError as nack_exc:
                log.error("could not give task %s back (%s); it returns when its lease expires", env.id, nack_exc)

    async def _refused_write(self, held: Held, exc: StorageRejected) -> None:
        """A write the backend refused for good: try again (a later delivery) until
        ``STATUS_WRITE_MAX_TRIES``, then dead-letter the task rather than loop forever."""
        env = held.delivery.envelope
        tries = self._refused.pop(env.id, 0) + 1
        if tries < STATUS_WRITE_MAX_TRIES:
            self._refused[env.id] = tries
            while len(self._refused) > REJECTED_MEMORY:
                self._refused.popitem(last=False)
            log.error("task %s: the backend refused its status (%s); try %d of %d", env.id, exc, tries,
                      STATUS_WRITE_MAX_TRIES)
            try:
                await self.broker.nack(held.delivery, requeue=True, delay=STATUS_RETRY_DELAY_S)
            except StemError as nack_exc:
                log.error("could not give task %s back (%s); it returns when its lease expires", env.id, nack_exc)
            return
        log.error("task %s: the backend refused its status %d times (%s); dead-lettering it as %s", env.id, tries, exc,
                  STATUS_WRITE_FAILED)
        self.counters.failed += 1
        meta = {"error": _problem("StorageRejected", str(exc)), "worker": self.worker_id, "attempts": env.attempt + 1,
                "tries": tries}
        try:
            await self.broker.dead_letter(held.delivery, reason=STATUS_WRITE_FAILED, meta=meta)
        except StemError as dead_exc:
            log.error("could not dead-letter task %s (%s); it returns when its lease expires", env.id, dead_exc)
            return
        self._report(held, "failed", level=logging.WARNING, reason=STATUS_WRITE_FAILED)
        self._report(held, "dead-lettered", level=logging.WARNING, reason=STATUS_WRITE_FAILED)

    async def _process(self, held: Held, release_slot: Callable[[], None]) -> None:
        env = held.delivery.envelope
        meta = held.meta
        if self.signer is not None:
            # Before anything else: an unverified envelope runs nothing and writes no status
            # (its id may be a real task's, whose status it must not change).
            try:
                self.signer.verify(env)
            except SignatureInvalid as exc:
                return await self._reject_signature(held, exc)
        # Deliveries of this attempt that nobody settled (a nack for a retry starts a new
        # attempt; brokers that count it as a delivery too are evened out by the attempt).
        unsettled = held.delivery.delivery_count - env.attempt
        if self.max_deliveries and unsettled > self.max_deliveries:
            message = (f"task {env.id} ({env.name}) was delivered {unsettled} times without being settled: each "
                       f"time its worker died, hung past its lease or lost its connection (limit {self.max_deliveries}, "
                       "STEM_MAX_DELIVERIES)")
            return await self._finish_failed(held, _problem("DeliveryLimitExceeded", message), DELIVERY_LIMIT_EXCEEDED)
        task = self.app.registry.get(env.name)
        if task is None:
            message = f"no task named {env.name!r} is registered on worker {self.worker_id}"
            return await self._finish_failed(held, _problem("UnregisteredTask", message), UNREGISTERED_TASK)
        problem = task.args_problem(env.args)
        if problem is not None:
            return await self._finish_failed(held, _problem("InvalidEnvelope", problem), INVALID_ENVELOPE)
        revoked = self.revocation(env.id)
        if revoked is not None:
            return await self._cancel(held, "revoked", revoked)
        held.state = ACTIVE
        held.started_at = utcnow()
        held.started_mono = monotonic()
        meta["started_at"] = to_iso(held.started_at)
        if self.metrics is not None:
            self.metrics.task_started(held.queue, env.name)
        # At DEBUG: two lines per task cost a quarter of a Redis drain's throughput
        # (docs/metrics.md); the outcome line below stays at INFO.
        self._report(held, "started", level=logging.DEBUG)
        # The running status is written while the body starts (one round trip less per
        # task); every later write of this task waits for it, so the order holds.
        if not env.ignores_result:
            held.running_write = asyncio.ensure_future(
                self.backend.set_status(env.id, TaskState.RUNNING, attempt=env.attempt, meta=dict(meta))
            )
        try:
            kind, value = await self._run_body(task, held)
        finally:
            release_slot()
            if self.metrics is not None:
                self.metrics.task_ran(held.queue, env.name, held.runtime())
            await self._running_written(held)
        meta["finished_at"] = to_iso(utcnow())
        meta["runtime"] = round(held.runtime() or 0.0, 6)
        meta.pop("progress", None)
        if kind == "ok":
            await self._succeed(held, value)
        elif kind == "cancelled":
            if value == "shutdown":
                await self._requeue_interrupted(held)
            else:
                await self._cancel(held, value, self.revocation(env.id))
        else:
            await self._fail(held, task, value)

    # -- the body -------------------------------------------------------------------

    async def _run_body(self, task: "Task", held: Held) -> tuple[str, Any]:
        """("ok", result) | ("error", exception) | ("cancelled", reason)."""
        ctx = TaskContext(held, worker_id=self.worker_id, bridge=self.bridge, extend=self.leases.extend, progress=self.progress)
        args = held.delivery.envelope.args
        if held.cancel_reason is not None:  # interrupted (shutdown) before the body started
            return "cancelled", held.cancel_reason
        try:
            if task.is_async:
                body: asyncio.Future[Any] = asyncio.ensure_future(task.func(ctx, **args))
            else:
                body = self.bridge.run(task.func, ctx, **args)
        except Exception as exc:  # noqa: BLE001 - raised by the call itself (bad signature...)
            return "error", exc
        body.add_done_callback(retrieve)  # an abandoned body may finish later
        held.body = body
        try:
            done, _ = await asyncio.wait({body}, timeout=task.time_limit)
        except asyncio.CancelledError:
            held.cancel_reason = held.cancel_reason or "shutdown"
            body.cancel()
            raise
        if not done:
            held.cancel_reason = held.cancel_reason or "time-limit"
            body.cancel()
            if task.is_async:
                await asyncio.wait({body}, timeout=CANCEL_GRACE_S)
            else:
                log.warning("sync task %s (%s) outran its time limit; its thread is abandoned", held.id, held.name)
        reason = held.cancel_reason
        if reason == "time-limit":
            return "error", TimeLimitExceeded(f"task {held.name} exceeded its time limit of {task.time_limit} s")
        if reason is not None:
            return "cancelled", reason
        if body.cancelled():
            return "cancelled", "cancelled"
        exc = body.exception()
        if exc is not None:
            return "error", exc
        return "ok", body.result()

    async def _running_written(self, held: Held) -> None:
        write, held.running_write = held.running_write, None
        if write is None:
            return
        try:
            await asyncio.shield(write)
        except StemError as exc:
            # Not fatal: the final status is what matters (and if that fails too, the
            # delivery is nacked and the task runs again).
            log.warning("could not write the running status of task %s: %s", held.id, exc)

    async def progress(self, held: Held, data: dict[str, Any]) -> None:
        """``ctx.progress``: the running status with ``meta.progress``."""
        if held.cancel_reason is not None or held.state == SETTLED:
            return  # an abandoned body must not overwrite the final status
        await self._running_written(held)
        if held.delivery.envelope.ignores_result:
            return
        held.meta["progress"] = data
        await self.backend.set_status(held.id, TaskState.RUNNING, attempt=held.delivery.envelope.attempt, meta=held.meta)

    # -- outcomes -------------------------------------------------------------------

    async def _succeed(self, held: Held, result: Any) -> None:
        env = held.delivery.envelope
        if env.ignores_result:  # no status, no result: the ack alone
            await self.broker.ack(held.delivery)
            self.counters.succeeded += 1
            return
        try:
            await self.broker.ack_with_status(
                held.delivery, self.backend, TaskState.SUCCEEDED, payload=result, attempt=env.attempt, meta=held.meta
            )
        except ValueError as exc:
            error = _problem("InvalidResult", f"the return value of {env.name} cannot be stored: {exc}")
            return await self._finish_failed(held, error, INVALID_RESULT)
        self.counters.succeeded += 1
        self._report(held, "succeeded")

    async def _fail(self, held: Held, task: "Task", exc: BaseException) -> None:
        env = held.delivery.envelope
        error = error_info(exc)
        if isinstance(exc, Reject):
            return await self._finish_failed(held, error, REJECTED)
        if env.attempt >= env.max_retries:
            return await self._finish_failed(held, error, MAX_RETRIES_EXHAUSTED)
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = exc.delay
        else:
            delay = backoff_seconds(env.attempt, base=task.retry_backoff, maximum=task.retry_backoff_max)
        if self.signer is not None and not self.signer.can_sign:
            message = (f"worker {self.worker_id} can verify but not sign (no private key for the active key), so "
                       "its retry with attempt + 1 cannot be signed; replay it from a process that signs")
            return await self._finish_failed(held, {**error, "retry_problem": message}, RETRY_NOT_SIGNED)
        held.meta["retry_in"] = round(delay, 3)
        held.meta["next_attempt_at"] = to_iso(utcnow() + timedelta(seconds=delay))
        await self.backend.set_status(env.id, TaskState.RETRIED, error=error, attempt=env.attempt, meta=held.meta)
        self.counters.retried += 1
        await self.broker.nack(held.delivery, requeue=True, delay=delay)
        self._report(held, "retried", level=logging.WARNING, retry_in=round(delay, 3), error=_error_line(error))

    async def _finish_failed(self, held: Held, error: dict[str, Any], reason: str) -> None:
        env = held.delivery.envelope
        held.meta["dead_letter_reason"] = reason
        await self.backend.set_status(env.id, TaskState.FAILED, error=error, attempt=env.attempt, meta=held.meta)
        self.counters.failed += 1
        dl_meta = {"error": error, "worker": self.worker_id, "attempts": env.attempt + 1}
        await self.broker.dead_letter(held.delivery, reason=reason, meta=dl_meta)
        self._report(held, "failed", level=logging.WARNING, reason=reason, error=_error_line(error))
        self._report(held, "dead-lettered", level=logging.WARNING, reason=reason)

    async def _reject_signature(self, held: Held, exc: SignatureInvalid) -> None:
        env = held.delivery.envelope
        log.warning("task %s (%r) on %s failed its signature check (%s): dead-lettered as %s, not run",
                    env.id, env.name, held.queue, exc, SIGNATURE_INVALID)
        self.counters.failed += 1
        await self.broker.dead_letter(held.delivery, reason=SIGNATURE_INVALID,
                                      meta={"error": str(exc), "keyId": exc.key_id, "worker": self.worker_id})
        self._report(held, "failed", level=logging.WARNING, reason=SIGNATURE_INVALID)
        self._report(held, "dead-lettered", level=logging.WARNING, reason=SIGNATURE_INVALID)

    async def _cancel(self, held: Held, reason: str, record: dict[str, Any] | None) -> None:
        env = held.delivery.envelope
        held.meta["cancel_reason"] = reason
        if record:
            held.meta["revoked_by"] = record.get("by")
            held.meta["revoke_reason"] = record.get("reason")
        await self.broker.ack_with_status(held.delivery, self.backend, TaskState.CANCELLED, attempt=env.attempt, meta=held.meta)
        self.counters.cancelled += 1
        self._report(held, "cancelled", reason=reason)

    async def _requeue_interrupted(self, held: Held) -> None:
        env = held.delivery.envelope
        meta = {k: held.meta[k] for k in ("task", "queue", "max_retries") if k in held.meta}
        meta["requeued_by"] = f"shutdown of {self.worker_id}"
        try:
            if not env.ignores_result:
                await self.backend.set_status(env.id, TaskState.QUEUED, attempt=env.attempt, meta=meta)
        finally:
            await self.give_back(held)

    def _report(self, held: Held, outcome: str, *, level: int = logging.INFO, reason: str | None = None,
                **extra: Any) -> None:
        """The outcome in the metrics and in one log line (docs/metrics.md)."""
        env = held.delivery.envelope
        if self.metrics is not None and outcome != "started":
            self.metrics.task_outcome(outcome, held.queue, env.name, reason)
        if not task_log.isEnabledFor(level):
            return
        duration = None
        if outcome in ("succeeded", "failed", "retried") and held.started_mono is not None:
            duration = round(held.runtime() or 0.0, 6)
        details = []
        if duration is not None:
            details.append(f"ran {duration:.3f} s")
        if reason is not None:
            details.append(f"reason={reason}")
        if "retry_in" in extra:
            details.append(f"retry in {extra['retry_in']:g} s")
        if extra.get("error"):
            details.append(f"error={extra['error']}")
        task_log.log(level, "task %s (%s) on %s attempt %d: %s%s", env.id, env.name, held.queue, env.attempt, outcome,
                     (" " + " ".join(details)) if details else "",
                     extra={"task_id": env.id, "task_name": env.name, "queue": held.queue, "attempt": env.attempt,
                            "worker_id": self.worker_id, "outcome": outcome, "duration": duration, "reason": reason,
                            **extra})

    async def give_back(self, held: Held) -> None:
        """Return a delivery to its queue without using up an attempt.

        ``requeue`` by id makes it ready now and fences our receipt, so the ack that
        follows only frees our prefetch slot. When requeue is unavailable or found
        nothing to move, ``nack(requeue=True)`` is the safe fallback: it never deletes.
        """
        moved = 0
        try:
            moved = await self.broker.requeue(held.queue, [held.id])
        except Unsupported:
            pass
        except StemError as exc:
            log.warning("could not requeue task %s: %s", held.id, exc)
        if moved:
            await self.broker.ack(held.delivery)
        else:
            await self.broker.nack(held.delivery, requeue=True)


def _error_line(error: dict[str, Any]) -> str:
    """``Type: message`` of an ``error_info``, cut to one short field."""
    text = f"{error.get('type')}: {error.get('message')}"
    return text if len(text) <= 500 else text[:497] + "..."


__all__ = [
    "CANCEL_GRACE_S",
    "Counters",
    "Executor",
    "INVALID_ENVELOPE",
    "INVALID_RESULT",
    "MAX_RETRIES_EXHAUSTED",
    "REJECTED",
    "STATUS_WRITE_FAILED",
    "RETRY_NOT_SIGNED",
    "UNREGISTERED_TASK",
    "error_info",
]
