"""The SQS adapter's URL parsing, redaction and queue-name layout (no server needed)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("aiobotocore")

from stem_core.adapters.sqs.codec import MAX_DELAY_S, delay_until  # noqa: E402
from stem_core.adapters.sqs.names import MAX_QUEUE_NAME_CHARS, SQSNames, escape, unescape  # noqa: E402
from stem_core.adapters.sqs.url import parse_sqs_url  # noqa: E402
from stem_core.clock import utcnow  # noqa: E402
from stem_core.errors import ConfigurationError  # noqa: E402
from stem_core.settings import load_settings, redact_url  # noqa: E402

STEM_NAMES = st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=200)
SQS_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def test_region_and_endpoint_forms() -> None:
    aws = parse_sqs_url("sqs://?region=eu-west-1", {})
    assert (aws.region, aws.endpoint, aws.access_key, aws.prefix) == ("eu-west-1", None, None, "")
    local = parse_sqs_url("sqs://?region=us-east-1&endpoint=http://127.0.0.1:5000/", {"wait_seconds": 5})
    assert (local.endpoint, local.wait_seconds, local.where) == ("http://127.0.0.1:5000", 5, "http://127.0.0.1:5000")
    keyed = parse_sqs_url("sqs://AKIAEXAMPLE:se%2Fcret@?region=us-east-1&prefix=prod-", {})
    assert (keyed.access_key, keyed.secret_key, keyed.prefix) == ("AKIAEXAMPLE", "se/cret", "prod-")


@pytest.mark.parametrize(("url", "options", "message"), [
    ("sqs://host?region=eu-west-1", {}, "put the server in the query"),
    ("sqs://?region=eu-west-1&colour=red", {}, "unknown sqs:// option 'colour'"),
    ("sqs://?region=Europe", {}, "region"),
    ("sqs://?region=eu-west-1&wait_seconds=30", {}, "1..20"),
    ("sqs://?region=eu-west-1", {"lease_seconds": 50_000}, "12 h"),
    ("sqs://?region=eu-west-1&endpoint=ftp://x", {}, "http(s)://host"),
    ("sqs://?region=eu-west-1&endpoint=http://k:s@h:1", {}, "not in the endpoint"),
    ("sqs://KEYONLY@?region=eu-west-1", {}, "both KEY_ID:SECRET@"),
    ("sqs://AK:se/Xzq9@?region=eu-west-1", {}, "percent-encode"),
    ("sqs://?region=eu-west-1&prefix=bad.prefix", {}, "prefix"),
])
def test_bad_urls_are_configuration_errors(url: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        parse_sqs_url(url, options)
    assert "Xzq9" not in str(caught.value)


def test_credentials_are_never_shown() -> None:
    url = "sqs://AKIAEXAMPLE:topsecret@?region=us-east-1&endpoint=http://127.0.0.1:5000"
    assert redact_url(url) == "sqs://***:***@?region=us-east-1&endpoint=http://127.0.0.1:5000"
    assert "AKIAEXAMPLE" not in redact_url("sqs://AKIAEXAMPLE:top/secret@?region=us-east-1")
    config = parse_sqs_url(url, {})
    assert config.shown_url == redact_url(url) and "topsecret" not in repr(config)
    assert config.redact("denied for AKIAEXAMPLE with topsecret") == "denied for *** with ***"
    shown = load_settings(broker=url, backend="sqlite:///tmp/x.db", env={}).to_dict()
    assert "topsecret" not in str(shown) and "AKIAEXAMPLE" not in str(shown)


@given(STEM_NAMES)
def test_escaping_is_reversible_and_has_no_dash(name: str) -> None:
    text = escape(name)
    assert "-" not in text and unescape(text) == name


@given(st.text(alphabet="ab_-", min_size=1, max_size=64), STEM_NAMES)
def test_every_queue_name_fits_sqs_and_parses_back(namespace: str, queue: str) -> None:
    names = SQSNames("prod-", namespace)
    for kind in ("p0", "p9", "dead"):
        sqs_name = names.queue(queue, kind)
        assert SQS_NAME.fullmatch(sqs_name) and len(sqs_name) <= MAX_QUEUE_NAME_CHARS
        parsed = names.parse(sqs_name)
        assert parsed is not None and parsed.kind == kind
        assert parsed.queue == (None if names.is_hashed(queue) else queue)


def test_one_namespace_never_lists_another() -> None:
    short, longer = SQSNames("", "a"), SQSNames("", "a-b")
    assert not longer.queue("q", "p0").startswith(short.base)
    assert short.parse(longer.queue("q", "p0")) is None
    assert short.parse(short.subscriber("ab12")) is not None and short.parse("a-q-p10") is None


def test_delays_round_up_and_stop_at_15_minutes() -> None:
    now = utcnow()
    assert delay_until(None) == 0
    assert delay_until(now - timedelta(seconds=5), now) == 0
    assert delay_until(now + timedelta(seconds=0.2), now) == 1
    assert delay_until(now + timedelta(hours=2), now) == MAX_DELAY_S
