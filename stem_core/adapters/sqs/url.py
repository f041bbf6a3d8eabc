"""``sqs://`` URLs and the adapter's options.

Accepted forms::

    sqs://?region=eu-west-1                                  real AWS, credentials from the AWS chain
    sqs://?region=us-east-1&endpoint=http://127.0.0.1:5000   any SQS-compatible server (moto, ElasticMQ)
    sqs://KEY_ID:SECRET@?region=us-east-1&endpoint=...       explicit credentials (both redacted when shown)
    sqs://?region=eu-west-1&profile=ops&prefix=prod-          a named AWS profile, a queue-name prefix

Options: ``endpoint`` (SQS, and SNS unless ``sns_endpoint`` names another: ElasticMQ has no
SNS), ``sns=false`` (no broadcast), ``prefix`` (prepended to every queue and topic name),
``profile``, ``lease_seconds`` (default 30), ``wait_seconds`` (long polls, 1-20, default
20), ``timeout`` (seconds a call may take, default 10), ``retries`` (attempts, default 3),
``max_connections`` (default 64).

The region falls back to the AWS chain (``AWS_DEFAULT_REGION``, the profile) when the URL
has none. Secrets never travel in the query string: only the user part of the URL (shown
as ``***``) or the AWS chain carry them. Options come from the query and from keyword
arguments (keywords win); unknown ones raise ``ConfigurationError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigurationError
from ...settings import DEFAULT_LEASE_SECONDS, redact_text, redact_url, url_secrets

SCHEME = "sqs"
# SQS limits (botocore's service model): visibility 0..43,200 s, long polls 1..20 s.
MAX_VISIBILITY_S = 43_200
MAX_WAIT_SECONDS = 20
# Every call but a long poll must answer within this (a server that stops answering
# becomes BrokerUnavailable instead of a hang); a long poll gets its wait on top.
CALL_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0
# Total attempts botocore makes for a call that failed on the network or with a 5xx.
RETRY_ATTEMPTS = 3
# Idle long polls (one per watched SQS queue) each hold a connection; the rest share.
MAX_CONNECTIONS = 64
PREFIX_MAX_CHARS = 16

_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{0,%d}" % PREFIX_MAX_CHARS)
_PROFILE_RE = re.compile(r"[A-Za-z0-9_.@+=-]{1,64}")


def _positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _wait(value: Any) -> int:
    seconds = int(value)
    if not 1 <= seconds <= MAX_WAIT_SECONDS or seconds != float(value):
        raise ValueError(f"must be a whole number of seconds 1..{MAX_WAIT_SECONDS}")
    return seconds


def _lease(value: Any) -> float:
    seconds = _positive(float(value))
    if seconds > MAX_VISIBILITY_S:
        raise ValueError(f"must be at most {MAX_VISIBILITY_S} s (SQS's 12 h visibility ceiling)")
    return seconds


def _count(value: Any) -> int:
    number = int(value)
    if number < 1 or number != float(value):
        raise ValueError("must be a whole number >= 1")
    return number


def _text(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise ValueError(f"is not a valid {what}")
        return value
    return check


# name -> converter (raises ValueError with the reason)
OPTIONS: dict[str, Callable[[Any], Any]] = {
    "region": _text(_REGION_RE, "AWS region such as eu-west-1"),
    "endpoint": str,
    "sns_endpoint": str,
    "prefix": _text(_PREFIX_RE, f"queue-name prefix (0-{PREFIX_MAX_CHARS} of A-Z a-z 0-9 _ -)"),
    "profile": _text(_PROFILE_RE, "AWS profile name"),
    "lease_seconds": _lease,
    "wait_seconds": _wait,
    "sns": _boolean,
    "timeout": lambda v: _positive(float(v)),
    "retries": _count,
    "max_connections": _count,
}


@dataclass(frozen=True)
class SQSConfig:
    """What ``parse_sqs_url`` made of a URL; ``shown_url`` is safe to print."""

    shown_url: str
    region: str | None = None
    endpoint: str | None = None
    sns_endpoint: str | None = None
    prefix: str = ""
    profile: str | None = None
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    wait_seconds: int = MAX_WAIT_SECONDS
    sns: bool = True
    timeout: float = CALL_TIMEOUT_S
    retries: int = RETRY_ATTEMPTS
    max_connections: int = MAX_CONNECTIONS
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)

    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)

    def redact(self, text: str) -> str:
        """``text`` with the key id and secret (if the URL gave them) and any secret query
        value replaced by ``***``."""
        return redact_text(text, self.secrets | {s for s in (self.secret_key, self.access_key) if s})

    @property
    def where(self) -> str:
        """The server as errors name it: the endpoint, else the AWS region."""
        return self.endpoint or f"AWS region {self.region or '(from the AWS chain)'}"


def parse_sqs_url(url: str, options: Mapping[str, Any]) -> SQSConfig:
    """Check ``url`` and ``options`` (query first, keywords win) into an ``SQSConfig``."""
    shown = redact_url(url) if isinstance(url, str) else repr(url)
    if not isinstance(url, str) or not url.lower().startswith(SCHEME + "://"):
        raise ConfigurationError(f"not an sqs:// URL: {shown!r}")
    try:
        parts = urlsplit(url)
        user, secret = parts.username, parts.password
        host = parts.hostname
    except ValueError as exc:
        raise ConfigurationError(f"malformed sqs:// URL {shown!r}: {exc}") from None
    if "@" in url.partition("?")[0] and "@" not in parts.netloc:
        raise ConfigurationError(f"sqs:// URL {shown!r}: percent-encode reserved characters of the key id and "
                                 "secret ('/' as %2F, '+' as %2B)")
    if host or parts.path not in ("", "/") or parts.fragment:
        raise ConfigurationError(
            f"sqs:// URL {shown!r}: put the server in the query, e.g. sqs://?region=eu-west-1 "
            "or sqs://?region=us-east-1&endpoint=http://127.0.0.1:5000"
        )
    if (user is None) != (secret is None) or user == "" or secret == "":
        raise ConfigurationError(f"sqs:// URL {shown!r}: give both KEY_ID:SECRET@ or neither (the AWS chain)")
    merged: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    checked: dict[str, Any] = {}
    for key, value in merged.items():
        convert = OPTIONS.get(key)
        if convert is None:
            raise ConfigurationError(f"unknown sqs:// option {key!r}; known: {', '.join(sorted(OPTIONS))}")
        try:
            checked[key] = convert(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"sqs:// option {key}={value!r} {exc}") from None
    for key in ("endpoint", "sns_endpoint"):
        if key in checked:
            checked[key] = _endpoint(checked[key], shown)
    return SQSConfig(
        shown_url=shown,
        access_key=unquote(user) if user else None,
        secret_key=unquote(secret) if secret else None,
        secrets=url_secrets(url),
        **checked,
    )


def _endpoint(value: str, shown: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigurationError(f"sqs:// endpoint {value!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(f"sqs:// URL {shown!r}: endpoint must be http(s)://host[:port], got {value!r}")
    if parts.username or parts.password:
        raise ConfigurationError(f"sqs:// URL {shown!r}: credentials go in sqs://KEY_ID:SECRET@ or the AWS chain, "
                                 "not in the endpoint")
    return value.rstrip("/")


__all__ = ["CALL_TIMEOUT_S", "CONNECT_TIMEOUT_S", "MAX_CONNECTIONS", "MAX_VISIBILITY_S", "MAX_WAIT_SECONDS",
           "RETRY_ATTEMPTS", "SCHEME", "SQSConfig", "parse_sqs_url"]
