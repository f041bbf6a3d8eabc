"""``RabbitMQConfig``: what Stem makes of an ``amqp://`` / ``amqps://`` URL and its options.

Accepted forms::

    amqp://guest:guest@127.0.0.1:5672/            the default vhost "/"
    amqp://user:pass@host/my-vhost                 vhost "my-vhost" (%2F-encoded for "/")
    amqps://user:pass@host/?cafile=/etc/ca.pem     TLS, with aiormq's TLS options

Stem options (query parameters or keyword options, keywords win): ``lease_seconds``,
``heartbeat`` (s, the AMQP heartbeat: a process whose event loop stops answering is
dropped by the server after about twice this, and its deliveries come back),
``connect_timeout``, ``reconnect_interval``, ``publish_timeout`` (s a publish waits for
the server, a reconnection included, before ``BrokerUnavailable``), ``management_url``
(the management HTTP API, else ``STEM_RABBITMQ_MANAGEMENT_URL``; it gives in-flight
counts and the full queue list) and ``max_message_bytes``. Passed on to aiormq:
``name`` (the connection name shown by the server) and the TLS options ``cafile``,
``capath``, ``cadata``, ``keyfile``, ``certfile``, ``no_verify_ssl``. Anything else is a
``ConfigurationError``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError
from ...settings import DEFAULT_LEASE_SECONDS, redact_text, redact_url, url_secrets

SCHEMES = ("amqp", "amqps")
ENV_MANAGEMENT_URL = "STEM_RABBITMQ_MANAGEMENT_URL"
# AMQP heartbeat: the server drops a silent connection after about two of these.
HEARTBEAT_S = 15
CONNECT_TIMEOUT_S = 5.0
# After losing the server, aio-pika tries to reconnect this often.
RECONNECT_INTERVAL_S = 1.0
# A publish (a reconnection included) waits at most this long for the server's confirm.
PUBLISH_TIMEOUT_S = 30.0
# RabbitMQ's default ``max_message_size`` (3.10): a larger message closes the channel,
# so it is refused before it is sent.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024


def _positive(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        number = kind(value)
        if not math.isfinite(number) or number <= 0:
            raise ValueError("must be positive")
        return number

    return convert


def _heartbeat(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected whole seconds")
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 (off) or more seconds")
    return number


STEM_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "lease_seconds": _positive(float),
    "heartbeat": _heartbeat,
    "connect_timeout": _positive(float),
    "reconnect_interval": _positive(float),
    "publish_timeout": _positive(float),
    "management_url": str,
    "max_message_bytes": _positive(int),
}
DRIVER_OPTIONS = frozenset({"name", "cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl"})


@dataclass(frozen=True, slots=True)
class RabbitMQConfig:
    """A parsed URL: what aio-pika connects with, what Stem shows, and the tuning."""

    url: str
    shown_url: str
    password: str | None
    user: str
    vhost: str
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    heartbeat_s: int = HEARTBEAT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    reconnect_interval_s: float = RECONNECT_INTERVAL_S
    publish_timeout_s: float = PUBLISH_TIMEOUT_S
    management_url: str | None = None
    # In-flight counts come from the management API only when it was configured (its
    # figures are up to collect_statistics_interval old); the default address is used to
    # list the namespace's queues only, so counts stay exact or unknown, never stale.
    management_counts: bool = False
    max_message_bytes: int = MAX_MESSAGE_BYTES

    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)

    def redact(self, text: str) -> str:
        """``text`` with the password and secret query values replaced (driver errors may
        quote the URL)."""
        return redact_text(text, self.secrets | ({self.password} if self.password else set()))

    @property
    def where(self) -> str:
        return f"RabbitMQ at {self.shown_url}"


def parse_url(url: str, options: Mapping[str, Any]) -> RabbitMQConfig:
    """Split ``url`` plus keyword ``options`` into a ``RabbitMQConfig``."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        password = parts.password
    except ValueError as exc:
        raise ConfigurationError(f"malformed RabbitMQ URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(f"not an amqp:// or amqps:// URL: {shown!r}")
    if not parts.hostname:
        raise ConfigurationError(f"RabbitMQ URL {shown!r} names no host: use amqp://user:password@host:5672/vhost")
    del port  # parsed only to reject a malformed one
    raw_path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if "/" in raw_path:
        raise ConfigurationError(f"RabbitMQ URL {shown!r}: the path is one vhost; write '/' inside it as %2F")
    vhost = unquote(raw_path) or "/"
    stem: dict[str, Any] = {}
    driver: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in STEM_OPTIONS:
            stem[key] = value
        elif key in DRIVER_OPTIONS:
            driver.append((key, value))
        else:
            raise ConfigurationError(_unknown(key, shown))
    for key, value in options.items():
        if key not in STEM_OPTIONS:
            raise ConfigurationError(_unknown(key, shown))
        stem[key] = value
    # An explicit management_url wins over the environment; None or "" turns the API off.
    # Neither given: the plugin's standard address on the broker's host (AMQP cannot list
    # queues, so without it a fresh process knows none; a missing plugin is logged once).
    management_counts = True
    if "management_url" in stem:
        management = stem.pop("management_url") or None
    elif ENV_MANAGEMENT_URL in os.environ:
        management = os.environ[ENV_MANAGEMENT_URL] or None
    else:
        management, management_counts = default_management_url(scheme, parts.hostname), False
    parsed: dict[str, Any] = {}
    for key, value in stem.items():
        try:
            parsed[key] = STEM_OPTIONS[key](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"RabbitMQ option {key}={value!r} is invalid: {exc}") from None
    if management is not None and (not isinstance(management, str) or urlsplit(management).scheme not in ("http", "https")):
        raise ConfigurationError(f"management URL {redact_url(management)!r} must be http:// or https://")
    heartbeat = parsed.get("heartbeat", HEARTBEAT_S)
    query = urlencode([*driver, ("heartbeat", str(heartbeat))])
    path = "/" + (raw_path or "")
    return RabbitMQConfig(
        url=urlunsplit((scheme, parts.netloc, path, query, "")),
        shown_url=shown,
        password=password,
        secrets=url_secrets(url),
        user=unquote(parts.username or "guest"),
        vhost=vhost,
        lease_seconds=parsed.get("lease_seconds", DEFAULT_LEASE_SECONDS),
        heartbeat_s=heartbeat,
        connect_timeout_s=parsed.get("connect_timeout", CONNECT_TIMEOUT_S),
        reconnect_interval_s=parsed.get("reconnect_interval", RECONNECT_INTERVAL_S),
        publish_timeout_s=parsed.get("publish_timeout", PUBLISH_TIMEOUT_S),
        management_url=management,
        management_counts=management_counts and management is not None,
        max_message_bytes=parsed.get("max_message_bytes", MAX_MESSAGE_BYTES),
    )


def default_management_url(scheme: str, host: str) -> str:
    """The management plugin's default listener on ``host``: HTTP 15672 beside ``amqp://``,
    HTTPS 15671 beside ``amqps://``."""
    shown_host = f"[{host}]" if ":" in host else host
    return f"https://{shown_host}:15671/" if scheme == "amqps" else f"http://{shown_host}:15672/"


def _unknown(key: str, shown: str) -> str:
    names = ", ".join(sorted(set(STEM_OPTIONS) | DRIVER_OPTIONS))
    return f"unknown RabbitMQ option {key!r} in {shown!r}; known: {names}"


__all__ = ["ENV_MANAGEMENT_URL", "RabbitMQConfig", "default_management_url", "parse_url"]
