"""``RedisConfig``: what a ``redis://`` or ``rediss://`` URL and keyword options say.

URL query parameters: Stem options (``lease_seconds`` ... see ``from_url`` of each
adapter), client tuning (``socket_timeout``, ``socket_connect_timeout``,
``max_connections``, ``retry_attempts``, ``health_check_interval``, ``client_name``) and
the standard TLS options of ``rediss://`` (``ssl_cert_reqs``, ``ssl_ca_certs``,
``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``,
``ssl_check_hostname``, ``ssl_min_version``, ``ssl_ciphers``). Anything else is a
``ConfigurationError``. Stem speaks RESP2 only (its reply parsing is pinned to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import parse_url as redis_parse_url

from ...errors import ConfigurationError
from ...settings import redact_text, redact_url, url_secrets

# Client tuning accepted in the URL query or as keyword options, with converters.
CLIENT_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "max_connections": int,
    "retry_attempts": int,
    "health_check_interval": int,
    "client_name": str,
}
# Passed through to redis-py untouched (it converts them itself).
REDIS_PASSTHROUGH = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_password",
    "ssl_check_hostname", "ssl_min_version", "ssl_ciphers", "ssl_include_verify_flags", "ssl_exclude_verify_flags",
})


@dataclass(frozen=True)
class RedisConfig:
    """What ``parse_url`` made of a URL: client kwargs, Stem options and the redacted URL."""

    shown_url: str
    password: str | None
    client: dict[str, Any]
    tuning: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)

    def redact(self, text: str) -> str:
        """``text`` with the password and secret query values (``ssl_password``) hidden."""
        return redact_text(text, self.secrets | ({self.password} if self.password else set()))


def parse_url(url: str, options: dict[str, Any], known: dict[str, Callable[[Any], Any]]) -> RedisConfig:
    """Split ``url`` + keyword ``options`` into redis-py kwargs and the Stem options in ``known``.

    Keyword options win over query parameters; unknown names raise ``ConfigurationError``.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed Redis URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a redis:// or rediss:// URL: {shown!r}")
    everything = {**CLIENT_OPTIONS, **known}
    stem: dict[str, Any] = {}
    passthrough: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in everything:
            stem[key] = value
        elif key in REDIS_PASSTHROUGH:
            passthrough.append((key, value))
        else:
            raise ConfigurationError(_unknown(key, everything, shown))
    for key, value in options.items():
        if key not in everything:
            raise ConfigurationError(_unknown(key, everything, shown))
        stem[key] = value
    if passthrough and scheme != "rediss":
        # redis-py would fail later with a TypeError naming a connection class.
        names = ", ".join(sorted({key for key, _ in passthrough}))
        raise ConfigurationError(f"Redis URL {shown!r}: {names} apply to TLS connections only; use rediss://")
    parsed: dict[str, Any] = {}
    for key, value in stem.items():
        try:
            parsed[key] = everything[key](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"Redis option {key}={value!r} is invalid: {exc}") from None
    if parts.path not in ("", "/") and not parts.path.strip("/").isdigit():
        raise ConfigurationError(f"Redis URL {shown!r}: the path must be a database number such as /0")
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(passthrough), ""))
    try:
        client = dict(redis_parse_url(clean))
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {shown!r}: {exc}") from None
    try:
        password = parts.password
    except ValueError:
        password = None
    for key in ("socket_timeout", "socket_connect_timeout", "max_connections", "retry_attempts"):
        if key in parsed and (parsed[key] <= 0 if key != "retry_attempts" else parsed[key] < 0):
            raise ConfigurationError(f"Redis option {key} must be positive, got {parsed[key]!r}")
    tuning = {k: parsed.pop(k) for k in list(parsed) if k in CLIENT_OPTIONS}
    return RedisConfig(shown_url=shown, password=password, client=client, tuning=tuning, options=parsed,
                       secrets=url_secrets(url))


def _unknown(key: str, known: dict[str, Any], shown: str) -> str:
    names = ", ".join(sorted(set(known) | REDIS_PASSTHROUGH))
    return f"unknown Redis option {key!r} in {shown!r}; known: {names}"


__all__ = ["CLIENT_OPTIONS", "REDIS_PASSTHROUGH", "RedisConfig", "parse_url"]
