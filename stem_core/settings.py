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
    "REPLY_QUEUE_PREFIX",
    "CONTROL_CLOCK_SKEW_SECONDS",
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
    "redact_url",
    "validate_namespace",
]
