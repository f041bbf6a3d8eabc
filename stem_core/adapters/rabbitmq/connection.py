"""``RabbitMQConnection``: the one aio-pika robust connection of a broker, its raw
channels, and the one place where aio-pika/aiormq errors become ``stem_core.errors``.

``aio_pika.connect_robust`` owns reconnection: after the server goes away (a restart,
``rabbitmqctl stop_app``) it tries again every ``reconnect_interval`` seconds. Stem does
not use aio-pika's channel and queue objects: it opens plain aiormq channels on the
robust connection's current transport (``transport.connection``, the one aio-pika
internal used, here only; ``tests/integration/test_rabbitmq_connection.py`` fails when
an upgrade moves it) and opens them again when they closed. So every part decides what
a lost channel means for it (a lost delivery is fenced, a publish is retried) instead
of aio-pika replaying consumers and declarations behind its back.

Two long-lived channels: ``publisher`` (publisher confirms: every publish waits for the
server's ack) and ``control`` (declarations, purges, passive declares). A passive
declare of a missing queue makes the server close that channel; ``passive`` turns it
into None and opens a fresh channel next time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, NoReturn, TypeVar

import aio_pika
import aiormq
from aiormq import exceptions as amqp
from pamqp.commands import Queue

from ...clock import monotonic
from ...errors import BrokerUnavailable, ConfigurationError, InvalidEnvelope, StemError
from .url import RabbitMQConfig

log = logging.getLogger("stem.rabbitmq")

# A call that finds the connection down waits this long (at most) for it to come back
# before answering BrokerUnavailable; publishes use ``publish_timeout`` instead.
RECONNECT_WAIT_S = 5.0
# Event-loop turns aiormq needs after close() to finish its own shutdown tasks.
CLOSE_TURNS = 3
# A passive declare that keeps failing on closed channels gives up after this many tries.
PASSIVE_ATTEMPTS = 3

# Errors that mean "the connection or channel went away": the call may be tried again.
TRANSIENT = (amqp.AMQPConnectionError, amqp.ChannelInvalidStateError, ConnectionError, OSError, asyncio.TimeoutError)


T = TypeVar("T")


async def shielded(work: Awaitable[T]) -> T:
    """Run ``work`` to its end even when the caller is cancelled.

    An AMQP exchange cut in the middle (a channel opened but never used, a close never
    acknowledged) leaves a channel half open, and a later frame on it makes the server
    close the whole connection. Stem's receive waits are cancelled routinely (a timeout
    around ``__anext__``), so every multi-step conversation with the server runs as a
    task of its own; the caller still sees its cancellation at once."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_retrieve)
        raise


async def close_quietly(channel: Any, timeout: float | None = None) -> None:
    """Close ``channel``, saying nothing when it is already closing with its connection;
    with ``timeout``, give up after that long (a connection whose writer is gone)."""
    try:
        async with asyncio.timeout(timeout):
            await channel.close()
    except Exception as exc:  # noqa: BLE001 - already closing, or the connection is gone
        log.debug("closing a channel: %s", exc)


def _retrieve(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a shielded RabbitMQ call finished after its caller left: %s", task.exception())


def reply_text(exc: BaseException) -> str:
    """The server's own words for a closed connection or channel, when it gave some."""
    for arg in exc.args:
        text = getattr(arg, "reply_text", None)
        if text:
            return str(text)
    return str(exc) or type(exc).__name__


class RabbitMQConnection:
    """The robust connection, its two shared channels and error translation."""

    def __init__(self, config: RabbitMQConfig, *, name: str) -> None:
        self.config = config
        self._name = name
        self._robust: aio_pika.abc.AbstractRobustConnection | None = None
        self._channels: dict[str, aiormq.abc.AbstractChannel] = {}
        self._opening: dict[str, asyncio.Lock] = {"publisher": asyncio.Lock(), "control": asyncio.Lock()}
        self.closing = False

    # -- lifecycle ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._robust is not None and not self.closing

    async def open(self) -> None:
        """Connect (idempotent); a server that cannot be reached or refuses us raises."""
        if self._robust is not None:
            return
        self.closing = False
        try:
            self._robust = await aio_pika.connect_robust(
                self.config.url,
                timeout=self.config.connect_timeout_s,
                reconnect_interval=self.config.reconnect_interval_s,
                fail_fast=True,
                client_properties={"connection_name": self._name},
            )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self.translate(exc) from None

    async def close(self) -> None:
        self.closing = True
        robust, self._robust = self._robust, None
        self._channels.clear()
        if robust is not None:
            try:
                await robust.close()
            except Exception as exc:  # closing a connection that already broke
                log.debug("closing the RabbitMQ connection: %s", exc)
            # aiormq finishes closing in a task of its own (its writer); let it run now,
            # or a loop closed right after this reports it "destroyed but pending".
            for _ in range(CLOSE_TURNS):
                await asyncio.sleep(0)

    def on_reconnect(self, callback: Any) -> None:
        """``callback(connection)`` after every reconnection (aio-pika calls it)."""
        if self._robust is not None:
            self._robust.reconnect_callbacks.add(callback)

    # -- channels -------------------------------------------------------------------

    async def underlying(self, wait: float = RECONNECT_WAIT_S) -> aiormq.abc.AbstractConnection:
        """The current aiormq connection, waiting up to ``wait`` s for a reconnection."""
        deadline = monotonic() + wait
        while True:
            robust = self._robust
            if robust is None or self.closing:
                raise BrokerUnavailable(f"the connection to {self.config.where} is closed")
            transport = robust.transport
            if transport is not None and not transport.connection.is_closed:
                return transport.connection
            left = deadline - monotonic()
            if left <= 0:
                raise BrokerUnavailable(f"cannot reach {self.config.where}: the connection is down and did not come back")
            try:
                async with asyncio.timeout(min(left, 0.5)):
                    await robust.connected.wait()
            except TimeoutError:
                pass
            await asyncio.sleep(0.01)

    async def channel(self, *, confirms: bool = False, wait: float = RECONNECT_WAIT_S) -> aiormq.abc.AbstractChannel:
        """A new raw channel on the current connection (the caller closes it)."""
        connection = await self.underlying(wait)
        try:
            # A returned (unroutable) message is a result, not an exception: publish.py
            # declares its queue again and sends it again.
            return await shielded(connection.channel(publisher_confirms=confirms, on_return_raises=False))
        except TRANSIENT as exc:
            raise self.translate(exc) from None

    async def _shared(self, role: str, confirms: bool, wait: float) -> aiormq.abc.AbstractChannel:
        channel = self._channels.get(role)
        if channel is not None and not channel.is_closed:
            return channel
        async with self._opening[role]:
            channel = self._channels.get(role)
            if channel is None or channel.is_closed:
                channel = self._channels[role] = await self.channel(confirms=confirms, wait=wait)
            return channel

    async def publisher(self, wait: float = RECONNECT_WAIT_S) -> aiormq.abc.AbstractChannel:
        return await self._shared("publisher", True, wait)

    async def control(self) -> aiormq.abc.AbstractChannel:
        return await self._shared("control", False, RECONNECT_WAIT_S)

    async def ping(self) -> None:
        """One round trip on the control channel."""
        channel = await self.control()
        try:
            await shielded(channel.basic_qos(prefetch_count=0))
        except Exception as exc:
            self.fail(exc)

    async def passive(self, queue: str) -> Queue.DeclareOk | None:
        """``queue``'s counts (ready messages, consumers), None when it does not exist."""
        for attempt in range(PASSIVE_ATTEMPTS):
            channel = await self.control()
            try:
                return await shielded(channel.queue_declare(queue, passive=True))
            except amqp.ChannelNotFoundEntity:
                return None
            except TRANSIENT as exc:
                # Another caller's 404 closed the shared channel under us: try a fresh one.
                if attempt + 1 == PASSIVE_ATTEMPTS or not self.is_open:
                    raise self.translate(exc) from None
        raise AssertionError("unreachable")

    # -- errors ---------------------------------------------------------------------

    def translate(self, exc: BaseException) -> StemError:
        """The Stem error for an aio-pika/aiormq exception (passwords redacted)."""
        if isinstance(exc, StemError):
            return exc
        text = self.config.redact(reply_text(exc))
        where = self.config.where
        if isinstance(exc, (amqp.ProbableAuthenticationError, amqp.AuthenticationError)):
            return BrokerUnavailable(f"{where} refused the credentials of user {self.config.user!r} ({text})")
        if isinstance(exc, (amqp.ConnectionNotAllowed, amqp.InvalidFrameError)) or (
                isinstance(exc, amqp.AMQPConnectionError) and "vhost" in text):
            return BrokerUnavailable(f"{where} refused the connection: vhost {self.config.vhost!r} does not exist "
                                     f"or user {self.config.user!r} may not use it ({text})")
        if isinstance(exc, amqp.ChannelAccessRefused):
            return BrokerUnavailable(f"{where} refused access: {text}")
        if isinstance(exc, amqp.ChannelPreconditionFailed):
            if "message size" in text or "max size" in text:
                return InvalidEnvelope(f"{where} refused a message: {text}")
            if "inequivalent arg" in text:
                return ConfigurationError(f"{where} holds a queue or exchange declared with other arguments: {text}")
            return StemError(f"{where} refused an operation: {text}")
        if isinstance(exc, TRANSIENT):
            return BrokerUnavailable(f"cannot reach {where}: {text}")
        return StemError(f"{where} failed: {type(exc).__name__}: {text}")

    def fail(self, exc: BaseException) -> NoReturn:
        raise self.translate(exc) from None


__all__ = ["PASSIVE_ATTEMPTS", "RECONNECT_WAIT_S", "RabbitMQConnection", "TRANSIENT", "reply_text", "shielded"]
