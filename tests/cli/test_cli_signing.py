"""Signing through the CLI: ``stem enqueue`` signs, a verify-only or broken key
configuration is one line and exit 2, ``stem health`` warns when the control plane is
open (without failing), ``stem config`` names the signing mode without key material."""

from __future__ import annotations

import base64
import json

from stem_core.signing import SIGNATURE_KEY_HEADER
from tests.cli.conftest import Cli

SECRET = base64.b64encode(b"cli-signing-secret-0123456789ab").decode()
KEYS = {"STEM_SIGNING_KEYS": f"k1:{SECRET}", "STEM_SIGNING_ACTIVE_KEY": "k1"}
PUBLIC_ONLY = {"STEM_SIGNING_PUBLIC_KEYS": "e1:" + base64.b64encode(bytes(32)).decode()}
NO_KEYS = {"STEM_SIGNING_KEYS": "", "STEM_SIGNING_ACTIVE_KEY": "", "STEM_SIGNING_PUBLIC_KEYS": "",
           "STEM_SIGNING_PRIVATE_KEYS": "", "STEM_SIGNING_ALGORITHM": ""}


def test_enqueue_signs_with_the_active_key(cli: Cli) -> None:
    result = cli("enqueue", "mail.send", "--args", '{"to": "a@b.c"}', env={**NO_KEYS, **KEYS})
    assert result.exit_code == 0, result.output
    peeked = json.loads(cli("inspect", "queue", "default", "--json", env=NO_KEYS).stdout)
    assert json.dumps(peeked).count(SIGNATURE_KEY_HEADER) == 1


def test_a_verify_only_host_cannot_enqueue_or_broadcast(cli: Cli) -> None:
    for args in (["enqueue", "mail.send"], ["broadcast", "--channel", "x.control", "stem.control.ping"]):
        result = cli(*args, env={**NO_KEYS, **PUBLIC_ONLY})
        assert result.exit_code == 2, result.output
        assert "cannot sign" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_key_configuration_is_one_line_exit_2_without_the_secret(cli: Cli) -> None:
    result = cli("config", env={**NO_KEYS, "STEM_SIGNING_KEYS": f"k1:{SECRET}", "STEM_SIGNING_ACTIVE_KEY": "k9"})
    assert result.exit_code == 2
    assert "STEM_SIGNING_ACTIVE_KEY 'k9' is not one of the ids" in result.stderr
    assert SECRET not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_health_warns_that_the_control_plane_is_open_without_failing(cli: Cli) -> None:
    open_report = cli("health", "--json", env=NO_KEYS)
    assert open_report.exit_code == 0
    assert [w["warning"] for w in json.loads(open_report.stdout)["warnings"]] == ["control-plane-open"]
    assert "control-plane-open" in cli("health", env=NO_KEYS).stdout
    keyed = cli("health", "--json", env={**NO_KEYS, **KEYS})
    assert keyed.exit_code == 0 and json.loads(keyed.stdout)["warnings"] == []


def test_config_names_the_signing_mode_not_the_keys(cli: Cli) -> None:
    doc = json.loads(cli("config", "--json", env={**NO_KEYS, **KEYS}).stdout)
    assert doc["signing"] == "hmac-sha256, keys k1, signs with k1"
    assert SECRET not in json.dumps(doc)
    assert json.loads(cli("config", "--json", env=NO_KEYS).stdout)["signing"].startswith("off")
