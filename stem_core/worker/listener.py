"""``ControlListener``: the worker's subscription to ``<ns>.control`` and its replies.

It runs on its own subscription (the task subscription is reopened on pause/resume and
must not make the worker miss a broadcast). At start the worker waits for
``await_ready``: a hello broadcast to itself that comes back proves the subscription is
open, so a command sent after the worker's first heartbeat is never missed.

What it refuses (SPEC §9, docs/security.md): with signing keys, a command that is
unsigned or whose signature fails (``SignatureInvalid``), or whose request id it has seen
(a replay); with or without keys, one whose ``reply_to`` is not a reply queue, whose
``sent_at`` is more than ``CONTROL_CLOCK_SKEW_SECONDS`` in the future, or that is older
than ``CONTROL_MAX_AGE_SECONDS``. Refusals are logged and, except plain duplicates and
expired commands, written to the audit log (``control-rejected``), at most
``CONTROL_AUDIT_PER_MINUTE`` records a minute so a flood cannot flood the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..clock import monotonic, to_iso, utcnow
from ..control.protocol import COMMAND_PREFIX, HELLO_NAME, Command, Reply, control_channel
from ..contract import Broker, ResultBackend
from ..envelope import Envelope, uuid7
from ..errors import SignatureInvalid, StemError
from ..settings import CONTROL_CLOCK_SKEW_SECONDS, CONTROL_MAX_AGE_SECONDS
from ..signing import Signer
from .commands import CommandTarget, handle_command

log = logging.getLogger("stem.worker")

# Request ids seen are remembered this long (a command is accepted only this young), and
# at most this many (oldest forgotten first).
CONTROL_SEEN_SECONDS = CONTROL_MAX_AGE_SECONDS + CONTROL_CLOCK_SKEW_SECONDS
CONTROL_SEEN_MAX = 4096
CONTROL_AUDIT_PER_MINUTE = 60
CONTROL_AUDIT_ACTION = "control-rejected"
# Text from a refused message is cut to this many characters in logs and audit records.
REJECT_TEXT_MAX = 200
CONTROL_HELLO_INTERVAL_S = 0.1
CONTROL_READY_TIMEOUT_S = 10.0
# After the control subscription failed (server hiccup), open it again after this long.
CONTROL_RETRY_S = 1.0


def _cut(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= REJECT_TEXT_MAX else text[:REJECT_TEXT_MAX] + "..."


class ControlListener:
    """Receives control broadcasts for one worker, runs them on ``target``, publishes the
    replies; a ``shutdown`` command becomes a stop request on ``target.control``."""

    def __init__(self, broker: Broker, target: CommandTarget, *, backend: ResultBackend | None = None,
                 signer: Signer | None = None) -> None:
        self.broker = broker
        self.target = target
        self.backend = backend
        self.signer = signer
        self.worker_id = target.worker_id
        self.channel = control_channel(self.broker.namespace)
        self._ready = asyncio.Event()
        self._seen: dict[str, float] = {}  # request id -> monotonic time it is forgotten
        self._audit_window = (0.0, 0)  # (window start, records written in it)
        self.rejected = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        try:
            await self._listen()
        finally:
            for task in list(self._tasks):  # commands still running when the worker stops
                task.cancel()

    async def _listen(self) -> None:
        worker_id = self.worker_id
        while True:
            try:
                async for delivery in self.broker.consume([], channels=[self.channel], consumer=worker_id):
                    try:
                        await self.broker.ack(delivery)
                    except StemError:
                        pass
                    if delivery.envelope.name == HELLO_NAME:
                        if delivery.envelope.args.get("worker_id") == worker_id:
                            self._ready.set()
                        continue
                    task = asyncio.create_task(self._on_command(delivery.envelope))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the control plane must come back
                log.warning("control subscription failed: %s; retrying in %.0f s", exc, CONTROL_RETRY_S)
                await asyncio.sleep(CONTROL_RETRY_S)

    def _remember(self, request_id: str, mono: float) -> bool:
        """Record ``request_id``; False when it was already seen (and not yet forgotten)."""
        seen = self._seen
        for old, until in list(seen.items()):
            if until > mono and len(seen) < CONTROL_SEEN_MAX:
                break  # insertion order is expiry order: the rest is younger
            del seen[old]
        if request_id in seen:
            return False
        seen[request_id] = mono + CONTROL_SEEN_SECONDS
        return True

    async def _reject(self, envelope: Envelope, kind: str, error: str, key_id: str | None) -> None:
        """Refuse a control message: log it and append an audit record (rate-limited)."""
        self.rejected += 1
        args = envelope.args
        details = {
            "kind": kind,
            "command": _cut(envelope.name),
            "request_id": _cut(args.get("request_id")),
            "reply_to": _cut(args.get("reply_to")),
            "sent_at": _cut(args.get("sent_at")),
            "targets": _cut(args.get("targets")),
            "key_id": _cut(key_id),
            "envelope_id": _cut(envelope.id),
        }
        log.warning("worker %s ignored control command %r (%s): %s", self.worker_id, details["command"], kind, _cut(error))
        if self.backend is None:
            return
        mono = monotonic()
        start, count = self._audit_window
        if mono - start >= 60.0:
            start, count = mono, 0
        if count >= CONTROL_AUDIT_PER_MINUTE:
            self._audit_window = (start, count)
            return
        self._audit_window = (start, count + 1)
        # The shape of ops.audit.audit_record (the ops layer is not importable from here).
        record = {
            "id": uuid7(), "at": to_iso(utcnow()), "actor": f"worker:{self.worker_id}", "action": CONTROL_AUDIT_ACTION,
            "namespace": self.broker.namespace, "broker": self.broker.scheme, "arguments": details,
            "result": {}, "ok": False, "error": _cut(error), "reason": f"{kind} control command ignored",
        }
        try:
            await self.backend.append_audit(record)
        except (StemError, ValueError) as exc:
            log.warning("could not audit the ignored control command: %s", exc)

    async def await_ready(self) -> None:
        """Broadcast a hello to ourselves until it comes back (or give up with a warning)."""
        deadline = monotonic() + CONTROL_READY_TIMEOUT_S
        hello = Envelope(name=HELLO_NAME, args={"worker_id": self.worker_id})
        while not self._ready.is_set():
            try:
                await self.broker.broadcast(self.channel, hello)
            except StemError as exc:
                # The hello only confirms the subscription: a control channel that cannot
                # take it (SNS refusing a publish, a broker hiccup) must not stop the worker
                # from working its queues. Commands may not reach it until that is fixed.
                log.warning("could not confirm the control subscription (%s); continuing without it", exc)
                return
            try:
                async with asyncio.timeout(CONTROL_HELLO_INTERVAL_S):
                    await self._ready.wait()
            except TimeoutError:
                if monotonic() > deadline:
                    log.warning("control subscription not confirmed after %.0f s; continuing", CONTROL_READY_TIMEOUT_S)
                    return

    async def _on_command(self, envelope: Envelope) -> None:
        worker_id = self.worker_id
        if not envelope.name.startswith(COMMAND_PREFIX):
            log.debug("ignoring %r on the control channel: not a command", _cut(envelope.name))
            return
        key_id: str | None = None
        if self.signer is not None:
            # First: nothing of an unverified message is trusted, its targets included.
            try:
                key_id = self.signer.verify(envelope)
            except SignatureInvalid as exc:
                kind = "unsigned" if exc.error == "missing signature" else "forged"
                return await self._reject(envelope, kind, str(exc), exc.key_id)
        try:
            command = Command.from_envelope(envelope)
        except ValueError as exc:
            return await self._reject(envelope, "invalid", str(exc), key_id)
        if not command.is_for(worker_id):
            return
        now, mono = utcnow(), monotonic()
        if not self._remember(command.request_id, mono):
            if self.signer is not None:
                await self._reject(envelope, "replayed", f"request id {command.request_id} was already seen", key_id)
            return
        ahead = (command.sent_at - now).total_seconds()
        if ahead > CONTROL_CLOCK_SKEW_SECONDS:
            return await self._reject(envelope, "future-dated",
                                      f"sent_at {to_iso(command.sent_at)} is {ahead:.0f} s in the future "
                                      f"(allowed clock skew {CONTROL_CLOCK_SKEW_SECONDS:g} s)", key_id)
        if command.age(now) > CONTROL_MAX_AGE_SECONDS or (command.deadline is not None and now > command.deadline):
            log.info("ignoring control command %s sent at %s (too old)", command.command, command.sent_at)
            return
        try:
            result = await handle_command(self.target, command)
            reply = Reply(command.request_id, worker_id, command.command, True, result)
        except Exception as exc:  # noqa: BLE001 - reported to the caller instead
            reply = Reply(command.request_id, worker_id, command.command, False, error=str(exc) or type(exc).__name__)
        try:
            # Past the deadline the caller has stopped reading and purged its reply queue:
            # a late reply would only linger there.
            if command.deadline is None or utcnow() <= command.deadline:
                await self.broker.publish(reply.to_envelope(), queue=command.reply_to)
        except StemError as exc:
            log.warning("could not reply to control command %s: %s", command.command, exc)
        if command.command == "shutdown" and reply.ok:
            self.target.control.request_stop(command.arguments.get("mode", "warm"))


__all__ = ["ControlListener"]
