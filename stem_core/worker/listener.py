"""``ControlListener``: the worker's subscription to ``<ns>.control`` and its replies.

It runs on its own subscription (the task subscription is reopened on pause/resume and
must not make the worker miss a broadcast). At start the worker waits for
``await_ready``: a hello broadcast to itself that comes back proves the subscription is
open, so a command sent after the worker's first heartbeat is never missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..clock import monotonic, utcnow
from ..control.protocol import HELLO_NAME, Command, Reply, control_channel
from ..contract import Broker
from ..envelope import Envelope
from ..errors import StemError
from ..settings import CONTROL_MAX_AGE_SECONDS
from .commands import CommandTarget, handle_command

log = logging.getLogger("stem.worker")

CONTROL_DEDUP_SIZE = 512
CONTROL_HELLO_INTERVAL_S = 0.1
CONTROL_READY_TIMEOUT_S = 10.0
# After the control subscription failed (server hiccup), open it again after this long.
CONTROL_RETRY_S = 1.0


class ControlListener:
    """Receives control broadcasts for one worker, runs them on ``target``, publishes the
    replies; a ``shutdown`` command becomes a stop request on ``target.control``."""

    def __init__(self, broker: Broker, target: CommandTarget) -> None:
        self.broker = broker
        self.target = target
        self.worker_id = target.worker_id
        self.channel = control_channel(self.broker.namespace)
        self._ready = asyncio.Event()
        self._seen: deque[str] = deque(maxlen=CONTROL_DEDUP_SIZE)
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

    async def await_ready(self) -> None:
        """Broadcast a hello to ourselves until it comes back (or give up with a warning)."""
        deadline = monotonic() + CONTROL_READY_TIMEOUT_S
        hello = Envelope(name=HELLO_NAME, args={"worker_id": self.worker_id})
        while not self._ready.is_set():
            await self.broker.broadcast(self.channel, hello)
            try:
                async with asyncio.timeout(CONTROL_HELLO_INTERVAL_S):
                    await self._ready.wait()
            except TimeoutError:
                if monotonic() > deadline:
                    log.warning("control subscription not confirmed after %.0f s; continuing", CONTROL_READY_TIMEOUT_S)
                    return

    async def _on_command(self, envelope: Envelope) -> None:
        worker_id = self.worker_id
        try:
            command = Command.from_envelope(envelope)
        except ValueError as exc:
            log.debug("ignoring a control message: %s", exc)
            return
        if not command.is_for(worker_id) or command.request_id in self._seen:
            return
        self._seen.append(command.request_id)
        now = utcnow()
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
