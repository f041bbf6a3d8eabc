"""Configuration: URLs, namespace and ``STEM_*`` environment variables.

Precedence for each value: explicit argument (a CLI flag), then the environment, then the
default. The result backend defaults to the broker URL; the broker defaults to the
embedded SQLite file under the XDG data directory.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from .errors import ConfigurationError
from .limits import DEFAULT_MAX_ENVELOPE_BYTES

ENV_BROKER_URL = "STEM_BROKER_URL"
ENV_BACKEND_URL = "STEM_RESULT_BACKEND_URL"
ENV_NAMESPACE = "STEM_NAMESPACE"
# The largest envelope (encoded JSON bytes) a producer may publish; default in ``limits``.
ENV_MAX_ENVELOPE_BYTES = "STEM_MAX_ENVELOPE_BYTES"
# STEM_MAX_ENVELOPE_BYTES may not be set below this (a control command must still fit).
MIN_MAX_ENVELOPE_BYTES = 1024
# Envelope and control signing (SPEC §9; the formats of the Dart Stem, research §9.1).
ENV_SIGNING_ALGORITHM = "STEM_SIGNING_ALGORITHM"
ENV_SIGNING_KEYS = "STEM_SIGNING_KEYS"
ENV_SIGNING_ACTIVE_KEY = "STEM_SIGNING_ACTIVE_KEY"
ENV_SIGNING_PUBLIC_KEYS = "STEM_SIGNING_PUBLIC_KEYS"
ENV_SIGNING_PRIVATE_KEYS = "STEM_SIGNING_PRIVATE_KEYS"
SIGNING_ENV = (ENV_SIGNING_ALGORITHM, ENV_SIGNING_KEYS, ENV_SIGNING_ACTIVE_KEY, ENV_SIGNING_PUBLIC_KEYS,
               ENV_SIGNING_PRIVATE_KEYS)
HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
SIGNING_ALGORITHMS = (HMAC_SHA256, ED25519)
ED25519_PUBLIC_KEY_BYTES = 32
# A private key is the 32-byte seed (what the Dart ``cryptography`` package and
# ``cryptography``'s raw encoding hold) or seed + public key (libsodium's 64 bytes).
ED25519_PRIVATE_KEY_BYTES = (32, 64)

DEFAULT_NAMESPACE = "stem"
DEFAULT_LEASE_SECONDS = 30.0
RESULT_TTL_SECONDS = 86_400.0
HEARTBEAT_TTL_SECONDS = 60.0
HEARTBEAT_INTERVAL_SECONDS = 10.0
CONTROL_TIMEOUT_SECONDS = 5.0
CONTROL_MAX_AGE_SECONDS = 30.0
# A control command whose ``sent_at`` is further than this in the future is rejected
# (a future date would otherwise stretch its age check); it is also how long past
# CONTROL_MAX_AGE_SECONDS a worker remembers a request id it has seen.
CONTROL_CLOCK_SKEW_SECONDS = 30.0
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
# What one write deletes at most of the records past their retention (audit records,
# dead letters, expired revocations, stale reply-queue rows).
PRUNE_BATCH = 500
AUDIT_PRUNE_BATCH = PRUNE_BATCH
# Retention of dead letters (every broker that keeps them): older ones are deleted, a
# bounded batch (``PRUNE_BATCH``) each time one is written. SQS keeps its dead queues for
# this long too (``MessageRetentionPeriod``, which SQS bounds to 60 s..14 days).
# ``STEM_DEAD_LETTER_RETENTION`` (a duration: 7d, 72h) changes it.
ENV_DEAD_LETTER_RETENTION = "STEM_DEAD_LETTER_RETENTION"
DEAD_LETTER_RETENTION_SECONDS = 14 * 86_400.0

# Deliveries of one attempt that ended without being settled (its worker died, hung past its
# lease or lost its connection) before the worker dead-letters it as
# ``delivery-limit-exceeded`` instead of running it again: a task that kills its own worker
# is not run for ever. ``STEM_MAX_DELIVERIES`` / ``stem worker --max-deliveries`` (0: no limit).
ENV_MAX_DELIVERIES = "STEM_MAX_DELIVERIES"
DEFAULT_MAX_DELIVERIES = 10

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
    return _retention_seconds(env, ENV_AUDIT_RETENTION, AUDIT_RETENTION_SECONDS)


def dead_letter_retention_seconds(env: Mapping[str, str] | None = None) -> float:
    """``$STEM_DEAD_LETTER_RETENTION`` as seconds, else ``DEAD_LETTER_RETENTION_SECONDS``."""
    return _retention_seconds(env, ENV_DEAD_LETTER_RETENTION, DEAD_LETTER_RETENTION_SECONDS)


def _retention_seconds(env: Mapping[str, str] | None, name: str, default: float) -> float:
    """A retention setting: a positive duration (``durations``: at most ten years)."""
    env = os.environ if env is None else env
    raw = env.get(name)
    if not raw:
        return default
    from .durations import parse_duration

    try:
        seconds = parse_duration(raw, option=name)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if not seconds > 0:
        raise ConfigurationError(f"{name} must be a positive duration, got {raw!r}")
    return seconds

def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional (``binascii.Error`` when it is neither)."""
    padded = text + "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    return base64.b64decode(padded, altchars=altchars, validate=True)


_KEY_ID_RE = re.compile(r"[A-Za-z0-9._\-]{1,64}")


def parse_key_list(text: str, variable: str) -> dict[str, bytes]:
    """``id:base64,id2:base64`` as ``{id: key bytes}``; ``ConfigurationError`` naming the
    variable and the entry (never the key material) for anything malformed."""
    keys: dict[str, bytes] = {}
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not encoded:
            raise ConfigurationError(f"{variable}: entry {position} is not id:base64")
        if _KEY_ID_RE.fullmatch(key_id) is None:
            raise ConfigurationError(
                f"{variable}: entry {position} has an invalid key id; use 1-64 letters, digits, '.', '_' or '-'")
        if key_id in keys:
            raise ConfigurationError(f"{variable}: key id {key_id!r} is listed twice")
        try:
            value = decode_base64(encoded)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{variable}: key {key_id!r} is not valid base64") from None
        if not value:
            raise ConfigurationError(f"{variable}: key {key_id!r} is empty")
        keys[key_id] = value
    return keys


@dataclass(frozen=True, slots=True)
class SigningSettings:
    """The signing configuration of one process (key material never in ``repr``).

    ``algorithm`` None means signing is off: nothing is signed and nothing is checked.
    HMAC keys sign and verify; Ed25519 verifies with ``public_keys`` and signs with
    ``private_keys[active_key]`` when the process has it (a verify-only process does not).
    """

    algorithm: str | None = None
    active_key: str | None = None
    hmac_keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    public_keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    private_keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def enabled(self) -> bool:
        return self.algorithm is not None

    @property
    def can_sign(self) -> bool:
        if self.algorithm == HMAC_SHA256:
            return self.active_key in self.hmac_keys
        if self.algorithm == ED25519:
            return self.active_key in self.private_keys
        return False

    @property
    def key_ids(self) -> list[str]:
        """The ids a signature may name (verification accepts any of them)."""
        return sorted(self.hmac_keys if self.algorithm == HMAC_SHA256 else self.public_keys)

    def describe(self) -> str:
        """One line for ``stem config`` and logs: algorithm, key ids, active key (no secrets)."""
        if not self.enabled:
            return "off (envelopes and control commands are not signed)"
        mode = f"signs with {self.active_key}" if self.can_sign else "verify only"
        return f"{self.algorithm}, keys {','.join(self.key_ids)}, {mode}"


def load_signing_settings(env: Mapping[str, str] | None = None) -> SigningSettings:
    """``STEM_SIGNING_*`` as ``SigningSettings``; ``ConfigurationError`` (one line, no key
    material) for an incomplete or malformed configuration.

    ``STEM_SIGNING_ALGORITHM`` (``hmac-sha256`` or ``ed25519``) may be left out: the keys
    given decide. HMAC needs ``STEM_SIGNING_KEYS`` and ``STEM_SIGNING_ACTIVE_KEY`` (one of
    them); Ed25519 needs ``STEM_SIGNING_PUBLIC_KEYS``, and with ``STEM_SIGNING_PRIVATE_KEYS``
    an active key that is in both. No keys at all: signing is off.
    """
    env = os.environ if env is None else env
    raw = {name: (env.get(name) or "").strip() for name in SIGNING_ENV}
    algorithm = raw[ENV_SIGNING_ALGORITHM].lower() or None
    if algorithm is not None and algorithm not in SIGNING_ALGORITHMS:
        raise ConfigurationError(f"{ENV_SIGNING_ALGORITHM} must be {' or '.join(SIGNING_ALGORITHMS)}, got {algorithm!r}")
    has_hmac = bool(raw[ENV_SIGNING_KEYS])
    has_ed = bool(raw[ENV_SIGNING_PUBLIC_KEYS] or raw[ENV_SIGNING_PRIVATE_KEYS])
    if algorithm is None:
        if has_hmac and has_ed:
            raise ConfigurationError(
                f"both {ENV_SIGNING_KEYS} (HMAC) and Ed25519 keys are set: choose with {ENV_SIGNING_ALGORITHM}")
        algorithm = HMAC_SHA256 if has_hmac else ED25519 if has_ed else None
    active = raw[ENV_SIGNING_ACTIVE_KEY] or None
    if algorithm is None:
        if active:
            raise ConfigurationError(f"{ENV_SIGNING_ACTIVE_KEY} is set but no signing keys are: set {ENV_SIGNING_KEYS}")
        return SigningSettings()
    if algorithm == HMAC_SHA256:
        keys = parse_key_list(raw[ENV_SIGNING_KEYS], ENV_SIGNING_KEYS)
        if not keys:
            raise ConfigurationError(f"{ENV_SIGNING_ALGORITHM} is {HMAC_SHA256} but {ENV_SIGNING_KEYS} is empty")
        if active is None:
            raise ConfigurationError(f"{ENV_SIGNING_KEYS} is set: {ENV_SIGNING_ACTIVE_KEY} must name the key to sign with")
        if active not in keys:
            raise ConfigurationError(f"{ENV_SIGNING_ACTIVE_KEY} {active!r} is not one of the ids in {ENV_SIGNING_KEYS}")
        return SigningSettings(algorithm=HMAC_SHA256, active_key=active, hmac_keys=keys)
    public = parse_key_list(raw[ENV_SIGNING_PUBLIC_KEYS], ENV_SIGNING_PUBLIC_KEYS)
    private = parse_key_list(raw[ENV_SIGNING_PRIVATE_KEYS], ENV_SIGNING_PRIVATE_KEYS)
    if not public:
        raise ConfigurationError(f"{ED25519} signing needs {ENV_SIGNING_PUBLIC_KEYS} (the keys workers verify with)")
    for key_id, value in public.items():
        if len(value) != ED25519_PUBLIC_KEY_BYTES:
            raise ConfigurationError(f"{ENV_SIGNING_PUBLIC_KEYS}: key {key_id!r} must be 32 raw bytes, got {len(value)}")
    for key_id, value in private.items():
        if len(value) not in ED25519_PRIVATE_KEY_BYTES:
            raise ConfigurationError(
                f"{ENV_SIGNING_PRIVATE_KEYS}: key {key_id!r} must be a 32-byte seed (or 64 bytes seed + public), got {len(value)}")
    if private:
        if active is None:
            raise ConfigurationError(f"{ENV_SIGNING_PRIVATE_KEYS} is set: {ENV_SIGNING_ACTIVE_KEY} must name the key to sign with")
        if active not in private:
            raise ConfigurationError(f"{ENV_SIGNING_ACTIVE_KEY} {active!r} is not one of the ids in {ENV_SIGNING_PRIVATE_KEYS}")
        if active not in public:
            raise ConfigurationError(
                f"{ENV_SIGNING_ACTIVE_KEY} {active!r} has no public key in {ENV_SIGNING_PUBLIC_KEYS}: nothing could verify it")
    elif active is not None and active not in public:
        raise ConfigurationError(f"{ENV_SIGNING_ACTIVE_KEY} {active!r} is not one of the ids in {ENV_SIGNING_PUBLIC_KEYS}")
    return SigningSettings(algorithm=ED25519, active_key=active, public_keys=public, private_keys=private)


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration of one process."""

    broker_url: str
    backend_url: str
    namespace: str
    broker_source: str = "default"
    backend_source: str = "default"
    namespace_source: str = "default"
    signing: SigningSettings = field(default_factory=SigningSettings)

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
        signing=load_signing_settings(env),
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
    "AUDIT_PRUNE_BATCH",
    "AUDIT_RETENTION_SECONDS",
    "DEAD_LETTER_RETENTION_SECONDS",
    "ENV_AUDIT_RETENTION",
    "ENV_DEAD_LETTER_RETENTION",
    "PRUNE_BATCH",
    "audit_retention_seconds",
    "dead_letter_retention_seconds",
    "REPLY_QUEUE_PREFIX",
    "CONTROL_CLOCK_SKEW_SECONDS",
    "REPLY_QUEUE_TTL_SECONDS",
    "CONTROL_MAX_AGE_SECONDS",
    "ED25519",
    "ENV_SIGNING_ACTIVE_KEY",
    "ENV_SIGNING_ALGORITHM",
    "ENV_SIGNING_KEYS",
    "ENV_SIGNING_PRIVATE_KEYS",
    "ENV_SIGNING_PUBLIC_KEYS",
    "HMAC_SHA256",
    "SIGNING_ALGORITHMS",
    "SIGNING_ENV",
    "SigningSettings",
    "load_signing_settings",
    "parse_key_list",
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
    "decode_base64",
    "default_sqlite_url",
    "load_settings",
    "max_envelope_bytes",
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
