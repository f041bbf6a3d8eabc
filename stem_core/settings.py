"""Configuration: URLs, namespace and ``STEM_*`` environment variables.

Precedence for each value: explicit argument (a CLI flag), then the environment, then the
default. The result backend defaults to the broker URL; the broker defaults to the
embedded SQLite file under the XDG data directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from .errors import ConfigurationError

ENV_BROKER_URL = "STEM_BROKER_URL"
ENV_BACKEND_URL = "STEM_RESULT_BACKEND_URL"
ENV_NAMESPACE = "STEM_NAMESPACE"

DEFAULT_NAMESPACE = "stem"
DEFAULT_LEASE_SECONDS = 30.0
RESULT_TTL_SECONDS = 86_400.0
HEARTBEAT_TTL_SECONDS = 60.0
HEARTBEAT_INTERVAL_SECONDS = 10.0
CONTROL_TIMEOUT_SECONDS = 5.0
CONTROL_MAX_AGE_SECONDS = 30.0
DEFAULT_PAGE_LIMIT = 50
# Queues of one-shot control replies (``stem.reply.<id>``): plumbing, not work. Here, below
# the adapters, so a broker that must treat them specially (SQS deletes them) need not
# import the control plane.
REPLY_QUEUE_PREFIX = "stem.reply."
# A reply queue is deleted by the client that made it once its replies are in; a broker that
# can expire keys or queues also lets one go this long after its last use, so a client that
# crashed mid-wait leaves nothing behind for good.
REPLY_QUEUE_TTL_SECONDS = 300.0

# Retention of the audit log (every backend): records older than this are deleted, a
# bounded batch at each append (``AUDIT_PRUNE_BATCH``), so pruning never blocks a write.
# ``STEM_AUDIT_RETENTION`` (a duration: 90d, 720h) changes it.
ENV_AUDIT_RETENTION = "STEM_AUDIT_RETENTION"
AUDIT_RETENTION_SECONDS = 30 * 86_400.0
AUDIT_PRUNE_BATCH = 500

# Retry policy defaults of ``@app.task`` (the worker's backoff reads them through the task):
# no retry unless asked; the n-th retry waits min(base * 2**n, max) seconds, shortened by
# up to the jitter fraction so the retries of a burst spread out.
DEFAULT_MAX_RETRIES = 0
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0
RETRY_JITTER_FRACTION = 0.25

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def data_home(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME`` or ``~/.local/share``."""
    env = os.environ if env is None else env
    raw = env.get("XDG_DATA_HOME")
    if raw:
        return Path(raw)
    return Path(env.get("HOME") or Path.home()) / ".local" / "share"


def default_sqlite_url(env: Mapping[str, str] | None = None) -> str:
    """``sqlite:///<XDG data dir>/stem/stem.db`` (the file is created on first use)."""
    # An absolute path after ``sqlite://`` gives the three slashes of the SPEC form.
    return "sqlite://" + (data_home(env) / "stem" / "stem.db").absolute().as_posix()


def validate_namespace(namespace: object) -> str:
    """Namespaces prefix keys, schemas and table rows: 1-64 letters, digits, ``_`` or ``-``."""
    if not isinstance(namespace, str) or _NAMESPACE_RE.fullmatch(namespace) is None:
        raise ConfigurationError(
            f"invalid namespace {namespace!r}: use 1-64 characters of letters, digits, '_' or '-'"
        )
    return namespace


# Schemes whose URL user is itself a credential (an AWS access key id): hidden too.
SECRET_USER_SCHEMES = frozenset({"sqs"})
# URL query parameters whose value is a secret, compared lower-case with '-' as '_': what
# libpq (``password``, ``sslpassword``), redis-py (``ssl_password``), AWS and token-style
# APIs take, and where a TLS private key lives (``sslkey``, ``ssl_keyfile``). A parameter
# whose name contains one of ``SECRET_QUERY_MARKERS`` counts as well.
SECRET_QUERY_PARAMS = frozenset({
    "pass", "pwd", "key", "sig", "auth", "sslkey", "ssl_keyfile", "ssl_key", "x_amz_credential",
})
SECRET_QUERY_MARKERS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "api_key",
                        "signature", "credential", "private")
# What a URL that cannot be parsed reliably is shown as: nothing of it but its scheme, since
# any part of it may be a password (a '#', '/' or '?' left unencoded in one ends the parse early).
UNPARSEABLE_URL = "<unparseable URL withheld>"
REDACTED = "***"
# ``redact_text`` replaces secrets of at least this many characters.
MIN_SCRUBBED_SECRET_CHARS = 3

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}")


def is_secret_param(name: str) -> bool:
    """Whether the URL query parameter ``name`` carries a secret (see ``SECRET_QUERY_PARAMS``)."""
    norm = unquote_plus(name).strip().lower().replace("-", "_")
    return norm in SECRET_QUERY_PARAMS or any(marker in norm for marker in SECRET_QUERY_MARKERS)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be parsed reliably (so nothing but its scheme may be shown), or
    None. The reason never quotes the URL."""
    if not isinstance(url, str):
        return "not a text"
    scheme, sep, _ = url.partition("://")
    if not sep or _SCHEME_RE.fullmatch(scheme) is None:
        return "expected scheme://..."
    if scheme.lower() in SECRET_USER_SCHEMES:
        return None  # shown textually; the adapter explains its own errors without quoting
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        # Never str(exc): urlsplit's messages may quote the netloc.
        return "unbalanced '[' or ']' around an IPv6 host" if "IPv6" in str(exc) else "it cannot be split into its parts"
    if parts.netloc and "@" not in parts.netloc and "@" in parts.path + parts.query + parts.fragment:
        return _RESERVED_HINT
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, port = port.partition(":")
        if colon and port and not port.isdigit():
            return _RESERVED_HINT
    return None


_RESERVED_HINT = ("the port is not a number or an '@' follows the host: percent-encode '#', '/', '?', '@' "
                  "and ':' inside a user name or password (e.g. '#' as %23)")


def _redact_query(query: str) -> str:
    if not query:
        return query
    out = []
    for piece in query.split("&"):
        name, eq, value = piece.partition("=")
        if eq and value and is_secret_param(name):
            piece = f"{name}={REDACTED}"
        elif eq and "://" in unquote_plus(value):
            piece = f"{name}={redact_url(unquote_plus(value))}"
        out.append(piece)
    return "&".join(out)


def _withheld(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if sep and _SCHEME_RE.fullmatch(scheme):
        return f"{scheme}://{UNPARSEABLE_URL}"
    return UNPARSEABLE_URL


def redact_url(url: str) -> str:
    """``url`` safe to show: any password replaced by ``***`` (user names are kept, except
    where the user is a credential: ``sqs://KEY_ID:SECRET@`` shows as ``sqs://***:***@``),
    secret query parameters (``?password=``, ``?sslpassword=``, ``?ssl_password=``, tokens,
    AWS secrets; see ``is_secret_param``) as ``name=***``, and a URL that cannot be parsed
    reliably withheld but for its scheme (``redis://<unparseable URL withheld>``)."""
    if not isinstance(url, str):
        return UNPARSEABLE_URL
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in SECRET_USER_SCHEMES:
        # Textual, not urlsplit: an unencoded "/" in a secret would end the netloc early.
        head, qsep, query = rest.partition("?")
        if "@" in head:
            head = f"***:***@{head.rpartition('@')[2]}"
        return f"{scheme}://{head}{qsep}{_redact_query(query)}"
    if url_problem(url) is not None:
        return _withheld(url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{user}@{hostport}"
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret: shown exactly as written
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> frozenset[str]:
    """The secret values written in ``url`` (password, secret query parameters, an SQS key
    pair), both as written and decoded, for scrubbing them out of driver messages; for a
    URL that cannot be parsed, everything after its scheme."""
    if not isinstance(url, str) or not url:
        return frozenset()
    found: set[str] = set()
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in SECRET_USER_SCHEMES:
        head, _, query = rest.partition("?")
        if "@" in head:
            found.update(head.rpartition("@")[0].split(":", 1))
    elif url_problem(url) is not None:
        found.add(rest if sep else url)
        query = ""
    else:
        parts = urlsplit(url)
        query = parts.query
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.partition(":")[2])
    for piece in query.split("&") if query else ():
        name, eq, value = piece.partition("=")
        if eq and value and is_secret_param(name):
            found.add(value)
        elif eq and "://" in unquote_plus(value):
            found.update(url_secrets(unquote_plus(value)))
    decoded = {unquote_plus(s) for s in found} | {unquote(s) for s in found}
    return frozenset(s for s in found | decoded if s)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (longest first, so a
    secret containing another is hidden whole). Secrets shorter than
    ``MIN_SCRUBBED_SECRET_CHARS`` are left alone: replacing every "a" of a message would
    destroy it while hiding nothing (the URLs themselves are shown through ``redact_url``)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SCRUBBED_SECRET_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def audit_retention_seconds(env: Mapping[str, str] | None = None) -> float:
    """``$STEM_AUDIT_RETENTION`` as seconds, else ``AUDIT_RETENTION_SECONDS``."""
    env = os.environ if env is None else env
    raw = env.get(ENV_AUDIT_RETENTION)
    if not raw:
        return AUDIT_RETENTION_SECONDS
    from .durations import parse_duration

    try:
        seconds = parse_duration(raw, option=ENV_AUDIT_RETENTION)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if not seconds > 0:
        raise ConfigurationError(f"{ENV_AUDIT_RETENTION} must be a positive duration, got {raw!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration of one process."""

    broker_url: str
    backend_url: str
    namespace: str
    broker_source: str = "default"
    backend_source: str = "default"
    namespace_source: str = "default"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready, with passwords redacted (for ``stem config``)."""
        return {
            "broker_url": redact_url(self.broker_url),
            "broker_source": self.broker_source,
            "backend_url": redact_url(self.backend_url),
            "backend_source": self.backend_source,
            "namespace": self.namespace,
            "namespace_source": self.namespace_source,
        }


def load_settings(
    broker: str | None = None,
    backend: str | None = None,
    namespace: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve URLs and namespace: arguments, then ``STEM_*`` variables, then defaults."""
    env = os.environ if env is None else env
    if broker:
        broker_url, broker_source = broker, "flag"
    elif env.get(ENV_BROKER_URL):
        broker_url, broker_source = env[ENV_BROKER_URL], ENV_BROKER_URL
    else:
        broker_url, broker_source = default_sqlite_url(env), "default"
    if backend:
        backend_url, backend_source = backend, "flag"
    elif env.get(ENV_BACKEND_URL):
        backend_url, backend_source = env[ENV_BACKEND_URL], ENV_BACKEND_URL
    else:
        backend_url, backend_source = broker_url, f"broker ({broker_source})"
    if namespace:
        ns, ns_source = namespace, "flag"
    elif env.get(ENV_NAMESPACE):
        ns, ns_source = env[ENV_NAMESPACE], ENV_NAMESPACE
    else:
        ns, ns_source = DEFAULT_NAMESPACE, "default"
    return Settings(
        broker_url=broker_url,
        backend_url=backend_url,
        namespace=validate_namespace(ns),
        broker_source=broker_source,
        backend_source=backend_source,
        namespace_source=ns_source,
    )


__all__ = [
    "AUDIT_PRUNE_BATCH",
    "AUDIT_RETENTION_SECONDS",
    "ENV_AUDIT_RETENTION",
    "audit_retention_seconds",
    "REPLY_QUEUE_PREFIX",
    "REPLY_QUEUE_TTL_SECONDS",
    "CONTROL_MAX_AGE_SECONDS",
    "CONTROL_TIMEOUT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PAGE_LIMIT",
    "ENV_BACKEND_URL",
    "ENV_BROKER_URL",
    "ENV_NAMESPACE",
    "HEARTBEAT_INTERVAL_SECONDS",
    "HEARTBEAT_TTL_SECONDS",
    "RESULT_TTL_SECONDS",
    "RETRY_BASE_SECONDS",
    "RETRY_JITTER_FRACTION",
    "RETRY_MAX_SECONDS",
    "Settings",
    "data_home",
    "default_sqlite_url",
    "load_settings",
    "redact_text",
    "redact_url",
    "url_problem",
    "url_secrets",
    "is_secret_param",
    "REDACTED",
    "MIN_SCRUBBED_SECRET_CHARS",
    "SECRET_QUERY_MARKERS",
    "SECRET_QUERY_PARAMS",
    "UNPARSEABLE_URL",
    "validate_namespace",
]
