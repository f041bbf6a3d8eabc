"""Envelope signing (SPEC §9): the canonical form of the Dart Stem (research §9.1), fixed
vectors computed here independently of ``stem_core.signing``, key configuration errors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from stem_core import signing
from stem_core.envelope import Envelope
from stem_core.errors import ConfigurationError, SignatureInvalid
from stem_core.settings import load_settings, load_signing_settings
from stem_core.signing import SIGNATURE_HEADER, SIGNATURE_KEY_HEADER, Signer

SECRET = b"stem-test-secret-0123456789abcdef"
SECRET2 = b"another-secret-for-rotation-0001"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hmac_env(active: str = "k1", **extra: str) -> dict[str, str]:
    return {"STEM_SIGNING_KEYS": f"k1:{b64(SECRET)},k2:{b64(SECRET2)}", "STEM_SIGNING_ACTIVE_KEY": active, **extra}


# A task as a Dart producer writes it: keys in any order, nested maps unsorted, a
# visibility timeout in milliseconds, a non-ASCII argument.
WIRE = (
    '{"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","name":"email.send",'
    '"args":{"to":"a@b.c","subject":"h\u00e9llo","n":3,"nested":{"z":1,"a":[{"y":2,"b":true}]}},'
    '"headers":{"traceparent":"00-abc-def-01","stem-args-encoder":"json"},'
    '"enqueuedAt":"2025-01-02T03:04:05.678Z","notBefore":null,"priority":5,"attempt":1,"maxRetries":3,'
    '"visibilityTimeout":30000,"queue":"emails","meta":{"stem.task":"email.send","b":null}}'
)
# Its canonical form, written out by hand from research §9.1: sorted keys (recursively,
# inside lists too), visibilityTimeoutMs, compact, UTF-8 unescaped.
CANONICAL = (
    '{"args":{"n":3,"nested":{"a":[{"b":true,"y":2}],"z":1},"subject":"h\u00e9llo","to":"a@b.c"},'
    '"attempt":1,"enqueuedAt":"2025-01-02T03:04:05.678Z",'
    '"headers":{"stem-args-encoder":"json","traceparent":"00-abc-def-01"},'
    '"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","maxRetries":3,"meta":{"b":null,"stem.task":"email.send"},'
    '"name":"email.send","notBefore":null,"priority":5,"queue":"emails","visibilityTimeoutMs":30000}'
)
# Dart's toIso8601String: milliseconds always, microseconds only when not zero.
WIRE_TIMES = (
    '{"id":"t2","name":"report","enqueuedAt":"2025-01-02T03:04:05.678901Z","notBefore":"2025-01-02T03:05:00Z",'
    '"attempt":0,"maxRetries":0,"priority":0,"queue":"default","visibilityTimeout":null}'
)
CANONICAL_TIMES = (
    '{"args":{},"attempt":0,"enqueuedAt":"2025-01-02T03:04:05.678901Z","headers":{},"id":"t2","maxRetries":0,'
    '"meta":{},"name":"report","notBefore":"2025-01-02T03:05:00.000Z","priority":0,"queue":"default",'
    '"visibilityTimeoutMs":null}'
)


def with_headers(wire: str, signature: bytes, key_id: str) -> Envelope:
    env = Envelope.from_json(wire)
    return env.replace(headers={**env.headers, SIGNATURE_HEADER: b64(signature), SIGNATURE_KEY_HEADER: key_id})


@pytest.mark.parametrize("wire, canonical", [(WIRE, CANONICAL), (WIRE_TIMES, CANONICAL_TIMES)])
def test_canonical_form_is_the_dart_one(wire: str, canonical: str) -> None:
    assert signing.canonical_json(Envelope.from_json(wire)) == canonical
    assert signing.canonical_bytes(Envelope.from_json(wire)) == canonical.encode("utf-8")


def test_a_dart_hmac_signature_verifies_here_and_ours_is_the_same() -> None:
    dart_signature = hmac.new(SECRET, CANONICAL.encode("utf-8"), hashlib.sha256).digest()
    signer = Signer(load_signing_settings(hmac_env()))
    signed = with_headers(WIRE, dart_signature, "k1")
    assert signer.verify(signed) == "k1"
    # Round trip through the wire: the headers travel, the canonical form is unchanged.
    assert signer.verify(Envelope.from_json(signed.to_json())) == "k1"
    ours = signer.sign(Envelope.from_json(WIRE))
    assert ours.headers[SIGNATURE_HEADER] == b64(dart_signature)
    assert ours.headers[SIGNATURE_KEY_HEADER] == "k1"
    # Signing again (a re-sign) ignores the old signature headers.
    assert signer.sign(ours).headers == ours.headers


def test_ed25519_rfc8032_raw_seed_and_a_dart_signature() -> None:
    # RFC 8032 §7.1 test 1: the 32-byte seed and the 32-byte public key are the raw forms.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    env = {"STEM_SIGNING_PUBLIC_KEYS": f"ed1:{b64(public)}", "STEM_SIGNING_PRIVATE_KEYS": f"ed1:{b64(seed)}",
           "STEM_SIGNING_ACTIVE_KEY": "ed1"}
    signer = Signer(load_signing_settings(env))
    assert signer.signature(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    dart_signature = Ed25519PrivateKey.from_private_bytes(seed).sign(CANONICAL.encode("utf-8"))
    verifier = Signer(load_signing_settings({"STEM_SIGNING_PUBLIC_KEYS": f"ed1:{b64(public)}"}))
    assert not verifier.can_sign
    assert verifier.verify(with_headers(WIRE, dart_signature, "ed1")) == "ed1"
    assert signer.sign(Envelope.from_json(WIRE)).headers[SIGNATURE_HEADER] == b64(dart_signature)
    # libsodium's 64-byte secret key (seed + public) is accepted too.
    env64 = dict(env, STEM_SIGNING_PRIVATE_KEYS=f"ed1:{b64(seed + public)}")
    assert Signer(load_signing_settings(env64)).signature(b"") == signer.signature(b"")


def test_every_signed_field_is_covered() -> None:
    signer = Signer(load_signing_settings(hmac_env()))
    signed = signer.sign(Envelope.from_json(WIRE))
    changes = [
        {"args": {"to": "evil@x"}}, {"attempt": 2}, {"max_retries": 9}, {"meta": {}}, {"name": "other"},
        {"priority": 9}, {"queue": "other"}, {"visibility_timeout": 1.0}, {"id": "x"},
        {"headers": {**signed.headers, "traceparent": "forged"}},
        {"not_before": signed.enqueued_at}, {"enqueued_at": signed.enqueued_at.replace(year=2030)},
    ]
    for change in changes:
        with pytest.raises(SignatureInvalid) as caught:
            signer.verify(signed.replace(**change))
        assert caught.value.error == "signature mismatch" and caught.value.key_id == "k1", change


@pytest.mark.parametrize(
    "headers, error, key_id",
    [
        ({}, "missing signature", None),
        ({SIGNATURE_HEADER: "AAAA"}, "missing signature", None),
        ({SIGNATURE_HEADER: b64(b"x" * 32), SIGNATURE_KEY_HEADER: "k9"}, "unknown key", "k9"),
        ({SIGNATURE_HEADER: "not base64!", SIGNATURE_KEY_HEADER: "k1"}, "malformed signature", "k1"),
        ({SIGNATURE_HEADER: b64(b"x" * 32), SIGNATURE_KEY_HEADER: "k1"}, "signature mismatch", "k1"),
    ],
)
def test_verification_failures(headers: dict[str, str], error: str, key_id: str | None) -> None:
    signer = Signer(load_signing_settings(hmac_env()))
    with pytest.raises(SignatureInvalid) as caught:
        signer.verify(Envelope(name="t", headers=headers))
    assert (caught.value.error, caught.value.key_id) == (error, key_id)


def test_rotation_verifies_any_configured_key() -> None:
    old = Signer(load_signing_settings(hmac_env("k1")))
    new = Signer(load_signing_settings(hmac_env("k2")))
    env = Envelope(name="t")
    assert new.verify(old.sign(env)) == "k1" and old.verify(new.sign(env)) == "k2"
    only_new = Signer(load_signing_settings({"STEM_SIGNING_KEYS": f"k2:{b64(SECRET2)}", "STEM_SIGNING_ACTIVE_KEY": "k2"}))
    with pytest.raises(SignatureInvalid, match="unknown signing key 'k1'"):
        only_new.verify(old.sign(env))


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STEM_SIGNING_KEYS": f"k1:{b64(SECRET)}"}, "STEM_SIGNING_ACTIVE_KEY must name"),
        ({"STEM_SIGNING_KEYS": f"k1:{b64(SECRET)}", "STEM_SIGNING_ACTIVE_KEY": "k2"}, "'k2' is not one of"),
        ({"STEM_SIGNING_KEYS": "k1", "STEM_SIGNING_ACTIVE_KEY": "k1"}, "entry 1 is not id:base64"),
        ({"STEM_SIGNING_KEYS": "k1:%%%", "STEM_SIGNING_ACTIVE_KEY": "k1"}, "key 'k1' is not valid base64"),
        ({"STEM_SIGNING_KEYS": f"k1:{b64(SECRET)},k1:{b64(SECRET)}", "STEM_SIGNING_ACTIVE_KEY": "k1"}, "listed twice"),
        ({"STEM_SIGNING_KEYS": f"a b:{b64(SECRET)}", "STEM_SIGNING_ACTIVE_KEY": "a b"}, "invalid key id"),
        ({"STEM_SIGNING_ACTIVE_KEY": "k1"}, "no signing keys"),
        ({"STEM_SIGNING_ALGORITHM": "rsa"}, "must be hmac-sha256 or ed25519"),
        ({"STEM_SIGNING_ALGORITHM": "ed25519"}, "needs STEM_SIGNING_PUBLIC_KEYS"),
        ({"STEM_SIGNING_ALGORITHM": "hmac-sha256"}, "STEM_SIGNING_KEYS is empty"),
        ({"STEM_SIGNING_PUBLIC_KEYS": f"e:{b64(b'short')}"}, "must be 32 raw bytes"),
        ({"STEM_SIGNING_KEYS": f"k1:{b64(SECRET)}", "STEM_SIGNING_ACTIVE_KEY": "k1",
          "STEM_SIGNING_PUBLIC_KEYS": f"e:{b64(bytes(32))}"}, "choose with STEM_SIGNING_ALGORITHM"),
        ({"STEM_SIGNING_PUBLIC_KEYS": f"e:{b64(bytes(32))}", "STEM_SIGNING_PRIVATE_KEYS": f"e:{b64(bytes(32))}"},
         "STEM_SIGNING_ACTIVE_KEY must name"),
    ],
)
def test_bad_key_configuration_is_one_clear_line_without_key_material(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_settings(env=env)
    text = str(caught.value)
    assert "\n" not in text and b64(SECRET) not in text and "%%%" not in text


def test_mismatched_ed25519_private_key_is_a_config_error() -> None:
    seed = bytes(range(32))
    public = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    env = {"STEM_SIGNING_PUBLIC_KEYS": f"e:{b64(public)}", "STEM_SIGNING_PRIVATE_KEYS": f"e:{b64(seed)}",
           "STEM_SIGNING_ACTIVE_KEY": "e"}
    with pytest.raises(ConfigurationError, match="does not match its public key"):
        Signer(load_signing_settings(env))


def test_no_keys_means_off_and_the_process_signer_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not load_settings(env={}).signing.enabled
    for name in ("STEM_SIGNING_KEYS", "STEM_SIGNING_ACTIVE_KEY", "STEM_SIGNING_ALGORITHM", "STEM_SIGNING_PUBLIC_KEYS",
                 "STEM_SIGNING_PRIVATE_KEYS"):
        monkeypatch.delenv(name, raising=False)
    assert signing.current() is None
    env = Envelope(name="t")
    assert signing.sign_if_able(env) is env
    for key, value in hmac_env().items():
        monkeypatch.setenv(key, value)
    signer = signing.current()
    assert signer is not None and signer.active_key == "k1" and signing.current() is signer
    assert signer.verify(signing.sign_if_able(env)) == "k1"
    assert "k1:" not in repr(signer) and b64(SECRET) not in repr(load_signing_settings(hmac_env()))
