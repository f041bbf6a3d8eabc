"""Envelope signing (SPEC §9), wire-compatible with the Dart Stem (research §9.1).

A signed envelope carries two headers: ``stem-signature`` (base64 of the signature) and
``stem-signature-key`` (the id of the key that made it). The signature covers the
*canonical form*: a JSON object with exactly these keys, sorted, nested objects sorted
recursively, compact separators, UTF-8::

    args, attempt, enqueuedAt (UTC ISO), headers (without the two signature headers),
    id, maxRetries, meta, name, notBefore (UTC ISO or null), priority, queue,
    visibilityTimeoutMs (integer milliseconds or null)

Times are written as the Dart ``toIso8601String`` of a UTC time (``clock.to_iso``). Since
``attempt``, ``notBefore``, ``queue``, ``priority`` and ``meta`` are covered, anything that
changes one of them before publishing must sign again: the ``Broker`` base signs every
publish, broadcast and enqueue after its overrides, and its ``requeued_envelope``,
``replayed_envelope`` and ``ready_now_envelope`` (retries, replays, requeues of delayed
messages) sign the copy they make.

Algorithms: ``hmac-sha256`` (shared secrets: every holder can sign and verify) and
``ed25519`` (workers may hold only public keys: they verify but cannot sign). Keys come
from ``STEM_SIGNING_*`` through ``settings.load_signing_settings``; ``current()`` is this
process's signer (None when signing is off), reloaded when those variables change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from .clock import to_iso
from .envelope import Envelope
from .errors import ConfigurationError, SignatureInvalid
from .settings import ED25519, HMAC_SHA256, SIGNING_ENV, SigningSettings, decode_base64, load_signing_settings

SIGNATURE_HEADER = "stem-signature"
SIGNATURE_KEY_HEADER = "stem-signature-key"
SIGNATURE_HEADERS = (SIGNATURE_HEADER, SIGNATURE_KEY_HEADER)
# The dead-letter reason of an envelope that failed verification (as the Dart worker).
SIGNATURE_INVALID = "signature-invalid"
SIGNING_EXTRA_HINT = "pip install 'stem-queue[signing]'"


def _sorted(value: Any) -> Any:
    """``value`` with every object's keys in Dart's order (UTF-16 code units), recursively."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value, key=_utf16_key)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def _utf16_key(key: str) -> bytes:
    # Dart compares strings by UTF-16 code units; code points differ only above U+FFFF.
    return key.encode("utf-16-be", "surrogatepass")


def canonical_payload(envelope: Envelope) -> dict[str, Any]:
    """The signed fields of ``envelope`` (not yet sorted)."""
    vt = envelope.visibility_timeout
    nb = envelope.not_before
    headers = envelope.headers
    if SIGNATURE_HEADER in headers or SIGNATURE_KEY_HEADER in headers:
        headers = {k: v for k, v in headers.items() if k not in SIGNATURE_HEADERS}
    return {
        "args": envelope.args,
        "attempt": envelope.attempt,
        "enqueuedAt": to_iso(envelope.enqueued_at),
        "headers": headers,
        "id": envelope.id,
        "maxRetries": envelope.max_retries,
        "meta": envelope.meta,
        "name": envelope.name,
        "notBefore": to_iso(nb) if nb is not None else None,
        "priority": envelope.priority,
        "queue": envelope.queue,
        "visibilityTimeoutMs": int(round(vt * 1000)) if vt is not None else None,
    }


def canonical_json(envelope: Envelope) -> str:
    """The canonical form as text (what a Dart producer's ``jsonEncode`` writes)."""
    try:
        return json.dumps(_sorted(canonical_payload(envelope)), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SignatureInvalid(f"envelope {envelope.id} cannot be put in canonical form: {exc}") from None


def canonical_bytes(envelope: Envelope) -> bytes:
    """The bytes that are signed: the canonical JSON in UTF-8 (a lone surrogate, which
    UTF-8 cannot hold, becomes U+FFFD as Dart's ``utf8.encode`` makes it)."""
    text = canonical_json(envelope)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


class Signer:
    """Signs and verifies envelopes with one process's keys (``SigningSettings``)."""

    def __init__(self, settings: SigningSettings) -> None:
        if not settings.enabled:
            raise ConfigurationError("signing is off: no signer to build")
        self.settings = settings
        self.algorithm = settings.algorithm
        self.active_key = settings.active_key
        self._hmac = dict(settings.hmac_keys)
        self._public: dict[str, Any] = {}
        self._private: Any = None
        if self.algorithm == ED25519:
            self._load_ed25519(settings)

    def _load_ed25519(self, settings: SigningSettings) -> None:
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        except ImportError:
            raise ConfigurationError(f"{ED25519} signing needs the cryptography package: {SIGNING_EXTRA_HINT}") from None
        self._public = {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in settings.public_keys.items()}
        active = settings.active_key
        if active is not None and active in settings.private_keys:
            raw = settings.private_keys[active]
            private = Ed25519PrivateKey.from_private_bytes(raw[:32])
            derived = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            if (len(raw) == 64 and raw[32:] != derived) or settings.public_keys.get(active) != derived:
                raise ConfigurationError(f"the private key {active!r} does not match its public key in STEM_SIGNING_PUBLIC_KEYS")
            self._private = private

    # -- signing ----------------------------------------------------------------------

    @property
    def can_sign(self) -> bool:
        """False for a verify-only process (Ed25519 public keys only)."""
        return self.settings.can_sign

    def signature(self, data: bytes) -> bytes:
        """The raw signature of ``data`` with the active key."""
        if not self.can_sign:
            raise ConfigurationError(
                f"this process can verify but not sign ({self.algorithm}, no private key for the active key): "
                "set STEM_SIGNING_PRIVATE_KEYS and STEM_SIGNING_ACTIVE_KEY")
        if self.algorithm == HMAC_SHA256:
            return hmac.new(self._hmac[self.active_key], data, hashlib.sha256).digest()  # type: ignore[index]
        return self._private.sign(data)  # type: ignore[no-any-return]

    def sign(self, envelope: Envelope) -> Envelope:
        """``envelope`` with fresh signature headers over its canonical form."""
        signature = self.signature(canonical_bytes(envelope))
        headers = dict(envelope.headers)
        headers[SIGNATURE_HEADER] = _b64(signature)
        headers[SIGNATURE_KEY_HEADER] = self.active_key  # type: ignore[assignment]
        return envelope.replace(headers=headers)

    # -- verifying --------------------------------------------------------------------

    def verify(self, envelope: Envelope) -> str:
        """The id of the key that signed ``envelope``; ``SignatureInvalid`` (with
        ``key_id`` and a short ``error``) when the headers are missing, the key is unknown,
        the signature is not base64, or it does not match."""
        headers = envelope.headers
        key_id = headers.get(SIGNATURE_KEY_HEADER)
        encoded = headers.get(SIGNATURE_HEADER)
        if not key_id or not encoded:
            missing = SIGNATURE_HEADER if not encoded else SIGNATURE_KEY_HEADER
            raise SignatureInvalid(f"missing {missing} header", key_id=key_id or None, error="missing signature")
        known = self._hmac if self.algorithm == HMAC_SHA256 else self._public
        if key_id not in known:
            raise SignatureInvalid(f"unknown signing key {key_id!r}", key_id=key_id, error="unknown key")
        try:
            signature = decode_base64(encoded)
        except (binascii.Error, ValueError):
            raise SignatureInvalid("stem-signature is not valid base64", key_id=key_id, error="malformed signature") from None
        data = canonical_bytes(envelope)
        if self.algorithm == HMAC_SHA256:
            good = hmac.compare_digest(hmac.new(self._hmac[key_id], data, hashlib.sha256).digest(), signature)
        else:
            from cryptography.exceptions import InvalidSignature

            try:
                self._public[key_id].verify(signature, data)
                good = True
            except InvalidSignature:
                good = False
        if not good:
            raise SignatureInvalid(f"signature does not match (key {key_id!r})", key_id=key_id, error="signature mismatch")
        return key_id

    def __repr__(self) -> str:
        return f"<Signer {self.settings.describe()}>"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_cache: tuple[tuple[str | None, ...], Signer | None] | None = None


def current(env: Mapping[str, str] | None = None) -> Signer | None:
    """This process's signer from ``STEM_SIGNING_*`` (None when signing is off), built once
    and rebuilt when the variables change; ``ConfigurationError`` for a bad configuration."""
    global _cache
    env = os.environ if env is None else env
    raw = tuple(env.get(name) for name in SIGNING_ENV)
    cached = _cache
    if cached is not None and cached[0] == raw:
        return cached[1]
    settings = load_signing_settings(env)
    signer = Signer(settings) if settings.enabled else None
    _cache = (raw, signer)
    return signer


# ``sign_if_able``'s default: look the signer up now (``current()``).
CURRENT: Any = object()


def sign_if_able(envelope: Envelope, signer: "Signer | None" = CURRENT) -> Envelope:
    """``envelope`` signed by this process's signer when it can sign, else unchanged.

    The broker's one signing step: a verify-only process publishes what it has (its
    callers that must not publish unsigned check ``require_signer`` first). A batch
    passes ``signer`` (one ``current()`` for all its envelopes: each call reads the
    ``STEM_SIGNING_*`` variables again)."""
    if signer is CURRENT:
        signer = current()
    if signer is None or not signer.can_sign:
        return envelope
    return signer.sign(envelope)


def resign(original: Envelope, changed: Envelope) -> Envelope:
    """``changed`` (a retry, replay or requeue copy of ``original``) signed by this
    process when it can sign and ``original`` verifies; else ``changed`` as it is.

    A copy is re-signed only when the message it came from was signed by a configured
    key: replaying or requeueing a forged, unsigned or stale message from a host with keys
    must not vouch for it. Such a copy keeps the old signature, which no longer matches,
    so every worker dead-letters it again as ``signature-invalid`` without running it."""
    signer = current()
    if signer is None or not signer.can_sign:
        return changed
    try:
        signer.verify(original)
    except SignatureInvalid:
        return changed
    return signer.sign(changed)


def require_signer(what: str) -> Signer | None:
    """This process's signer for a producer (None when signing is off). Raises
    ``ConfigurationError`` when signing is on but this process cannot sign: ``what``
    (an enqueue, a control command) would be published unsigned and rejected."""
    signer = current()
    if signer is not None and not signer.can_sign:
        raise ConfigurationError(
            f"cannot sign {what}: signing is on ({signer.algorithm}) but this process has no private key for "
            "STEM_SIGNING_ACTIVE_KEY (set STEM_SIGNING_PRIVATE_KEYS)")
    return signer


__all__ = [
    "CURRENT",
    "SIGNATURE_HEADER",
    "SIGNATURE_HEADERS",
    "SIGNATURE_INVALID",
    "SIGNATURE_KEY_HEADER",
    "Signer",
    "canonical_bytes",
    "canonical_json",
    "canonical_payload",
    "current",
    "require_signer",
    "resign",
    "sign_if_able",
]
