"""``SQSConnection``: the aiobotocore clients (SQS, and SNS for broadcast), the request
counter, and the one place where botocore errors become ``stem_core.errors``.

Every call is bounded: ``timeout`` seconds (a long poll gets its wait on top), botocore
retries network errors and 5xx answers ``retries`` times in total (standard mode), and
connecting gives up after ``CONNECT_TIMEOUT_S``. So a server that stops answering
surfaces as ``BrokerUnavailable`` within seconds, never as a hang.

SQS bills per request, so the connection counts every HTTP request it sends, retries
included (botocore's ``before-send`` event): ``requests`` in total and per operation
in ``by_operation``. The benchmark reads them; nothing else depends on them.

Error mapping: no or partial credentials, no region, an unknown profile ->
``ConfigurationError``; refused or expired credentials, the network, timeouts,
throttling and server faults -> ``BrokerUnavailable``; a queue that does not exist ->
``QueueMissing`` (callers create it again or report zeros); anything else -> one-line
``StemError``. Texts are redacted (URL credentials, anything shaped like an access key id).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections import Counter
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore import exceptions as bex

from ...errors import BrokerUnavailable, ConfigurationError, StemError
from .url import CONNECT_TIMEOUT_S, MAX_WAIT_SECONDS, SQSConfig

log = logging.getLogger("stem.sqs")

# Error codes (SQS JSON/query and SNS) that mean "these credentials are not accepted".
CREDENTIAL_CODES = frozenset({
    "InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException",
    "SignatureDoesNotMatch", "IncompleteSignature", "AccessDenied", "AccessDeniedException", "AuthFailure",
    "AuthorizationError", "InvalidSecurity", "RequestExpired", "MissingAuthenticationToken", "InvalidAccessKeyId",
})
# Codes that mean "cannot serve now" rather than "your request is wrong".
UNAVAILABLE_CODES = frozenset({
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestThrottled", "ThrottlingException",
    "Throttling", "KmsThrottled", "OverLimit", "RequestTimeout",
})
MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_XML_ERROR_RE = re.compile(r"<Code>(?P<code>[^<]*)</Code>\s*<Message>(?P<message>[^<]*)</Message>")
_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
ERROR_TEXT_MAX_CHARS = 300
# aiohttp's threshold for "a large body": bytes over this go out as a stream instead.
LARGE_BODY_BYTES = 1_048_576


class SQSCallError(StemError):
    """A call the server refused for a reason of its own; ``code`` is the AWS error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class QueueMissing(SQSCallError):
    """The SQS queue (or the SNS endpoint queue) does not exist."""


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` ('' for anything else)."""
    if isinstance(exc, bex.ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    return ""


class SQSConnection:
    """Owns the clients; ``sqs(op, ...)`` / ``sns(op, ...)`` are the only ways out."""

    def __init__(self, config: SQSConfig) -> None:
        self.config = config
        self.requests = 0
        self.by_operation: Counter[str] = Counter()
        self._stack: contextlib.AsyncExitStack | None = None
        self._sqs: Any = None
        self._sns: Any = None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._sqs is not None

    @property
    def has_sns(self) -> bool:
        return self._sns is not None

    async def open(self) -> None:
        """Build the clients (no network I/O yet). Idempotent."""
        if self._stack is not None:
            return
        cfg = self.config
        try:
            session = AioSession(profile=cfg.profile) if cfg.profile else AioSession()
            options: dict[str, Any] = {
                "region_name": cfg.region or session.get_config_variable("region"),
                "config": AioConfig(
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=cfg.timeout + MAX_WAIT_SECONDS,
                    retries={"max_attempts": cfg.retries, "mode": "standard"},
                    max_pool_connections=cfg.max_connections,
                    user_agent_extra="stem",
                ),
            }
        except bex.ProfileNotFound as exc:
            raise ConfigurationError(f"sqs:// URL {cfg.shown_url!r}: {exc}") from None
        if not options["region_name"]:
            raise ConfigurationError(f"sqs:// URL {cfg.shown_url!r} names no region: add ?region=eu-west-1 "
                                     "or set AWS_DEFAULT_REGION")
        if cfg.endpoint:
            options["endpoint_url"] = cfg.endpoint
        if cfg.access_key:
            options["aws_access_key_id"] = cfg.access_key
            options["aws_secret_access_key"] = cfg.secret_key
        stack = contextlib.AsyncExitStack()
        try:
            self._sqs = await stack.enter_async_context(session.create_client("sqs", **options))
            self._sqs.meta.events.register("before-send", self._count)
            if cfg.sns:
                if cfg.sns_endpoint:
                    options["endpoint_url"] = cfg.sns_endpoint
                self._sns = await stack.enter_async_context(session.create_client("sns", **options))
                self._sns.meta.events.register("before-send", self._count)
        except BaseException as exc:
            await stack.aclose()
            self._sqs = self._sns = None
            if isinstance(exc, Exception):
                raise self.translate(exc, "connect") from None
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._sqs = self._sns = None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    def drop_sns(self) -> None:
        """Broadcast turned out to be unavailable: stop using (and counting) SNS."""
        self._sns = None

    # -- calls ----------------------------------------------------------------------

    def _count(self, event_name: str = "", request: Any = None, **_: Any) -> None:
        self.requests += 1
        self.by_operation[event_name.rpartition(".")[2]] += 1
        body = getattr(request, "body", None)
        if isinstance(body, (bytes, bytearray)) and len(body) > LARGE_BODY_BYTES:
            # aiohttp warns about (and would copy) a bytes body over 1 MiB, which a full
            # batch of 10 messages reaches; a stream is sent as is (and rewound on retry).
            request.body = io.BytesIO(body)

    async def sqs(self, op: str, *, wait: float = 0.0, **params: Any) -> dict[str, Any]:
        """One SQS API call (``op`` in snake_case); ``wait`` is a long poll's wait."""
        if self._sqs is None:
            raise BrokerUnavailable(f"the SQS broker for {self.config.shown_url} is closed")
        return await self._call(self._sqs, op, wait, params)

    async def sns(self, op: str, **params: Any) -> dict[str, Any]:
        if self._sns is None:
            raise BrokerUnavailable(f"SNS is not available for {self.config.shown_url}")
        return await self._call(self._sns, op, 0.0, params)

    async def _call(self, client: Any, op: str, wait: float, params: dict[str, Any]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.config.timeout + wait):
                return await getattr(client, op)(**params)
        except TimeoutError:
            raise BrokerUnavailable(
                f"SQS at {self.config.where} did not answer {op} within {self.config.timeout + wait:.0f} s"
            ) from None
        except (bex.BotoCoreError, bex.ClientError, aiohttp.ClientError, OSError) as exc:
            raise self.translate(exc, op) from None

    # -- errors ---------------------------------------------------------------------

    def redact(self, text: str) -> str:
        text = _KEY_ID_RE.sub("***", self.config.redact(text))
        text = " ".join(text.split())
        return text if len(text) <= ERROR_TEXT_MAX_CHARS else text[:ERROR_TEXT_MAX_CHARS - 3] + "..."

    def translate(self, exc: BaseException, op: str) -> StemError:
        """The Stem error for a botocore/aiohttp exception raised by ``op``."""
        where = f"SQS at {self.config.where}"
        if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError)):
            return ConfigurationError(
                f"no usable AWS credentials for {self.config.shown_url}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, a profile (?profile=NAME), or sqs://KEY_ID:SECRET@ ({self.redact(str(exc))})"
            )
        if isinstance(exc, (bex.NoRegionError, bex.ProfileNotFound, bex.InvalidRegionError)):
            return ConfigurationError(f"sqs:// URL {self.config.shown_url!r}: {self.redact(str(exc))}")
        if isinstance(exc, bex.ClientError):
            code = error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message") or exc)
            xml = _XML_ERROR_RE.search(message)
            if xml is not None:  # an error page in another protocol's format (XML for a JSON call)
                code, message = xml.group("code"), xml.group("message")
            message = self.redact(message)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in MISSING_QUEUE_CODES:
                return QueueMissing(f"{where}: the queue does not exist ({op})", code)
            if code in CREDENTIAL_CODES or status in (401, 403):
                return BrokerUnavailable(f"{where} refused the credentials ({code}: {message})")
            if code in UNAVAILABLE_CODES or status >= 500:
                return BrokerUnavailable(f"{where} cannot serve {op} now ({code or status}: {message})")
            return SQSCallError(f"{where}: {op} failed ({code}: {message})", code)
        if isinstance(exc, (bex.ParamValidationError, bex.ValidationError)):
            return StemError(f"{where}: {op} was given bad parameters ({self.redact(str(exc))})")
        return BrokerUnavailable(f"cannot reach {where}: {self.redact(str(exc)) or type(exc).__name__}")


__all__ = ["QueueMissing", "SQSCallError", "SQSConnection", "error_code"]
