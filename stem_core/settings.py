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
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError
from .limits import DEFAULT_MAX_ENVELOPE_BYTES

ENV_BROKER_URL = "STEM_BROKER_URL"
ENV_BACKEND_URL = "STEM_RESULT_BACKEND_URL"
ENV_NAMESPACE = "STEM_NAMESPACE"
# The largest envelope (encoded JSON bytes) a producer may publish; default in ``limits``.
ENV_MAX_ENVELOPE_BYTES = "STEM_MAX_ENVELOPE_BYTES"
# STEM_MAX_ENVELOPE_BYTES may not be set below this (a control command must still fit).
MIN_MAX_ENVELOPE_BYTES = 1024

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


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (user names are kept, except where
    the user is a credential: ``sqs://KEY_ID:SECRET@`` shows as ``sqs://***:***@``)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in SECRET_USER_SCHEMES:
        # Textual, not urlsplit: an unencoded "/" in a secret would end the netloc early.
        head, qsep, query = rest.partition("?")
        if "@" in head:
            return f"{scheme}://***:***@{head.rpartition('@')[2]}{qsep}{query}"
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    if ":" in userinfo or parts.password is not None:
        netloc = f"{user}:***@{hostport}" if user else f":***@{hostport}"
    else:
        netloc = f"{user}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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


def max_envelope_bytes(env: Mapping[str, str] | None = None) -> int:
    """``STEM_MAX_ENVELOPE_BYTES`` (a whole number of bytes, at least 1 KiB), else the
    default of 1 MiB; ``ConfigurationError`` when it is set to anything else."""
    env = os.environ if env is None else env
    raw = (env.get(ENV_MAX_ENVELOPE_BYTES) or "").strip()
    if not raw:
        return DEFAULT_MAX_ENVELOPE_BYTES
    if not raw.isdigit() or len(raw) > 12 or int(raw) < MIN_MAX_ENVELOPE_BYTES:
        shown = raw if len(raw) <= 24 else raw[:21] + "..."
        raise ConfigurationError(f"{ENV_MAX_ENVELOPE_BYTES} must be a whole number of bytes of at least "
                                 f"{MIN_MAX_ENVELOPE_BYTES}, got {shown!r}")
    return int(raw)


__all__ = [
    "REPLY_QUEUE_PREFIX",
    "CONTROL_MAX_AGE_SECONDS",
    "CONTROL_TIMEOUT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PAGE_LIMIT",
    "ENV_BACKEND_URL",
    "ENV_BROKER_URL",
    "ENV_MAX_ENVELOPE_BYTES",
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
    "max_envelope_bytes",
    "redact_url",
    "validate_namespace",
]
