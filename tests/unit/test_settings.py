"""Configuration precedence (SPEC §6) and redaction."""

from __future__ import annotations

import pytest

from stem_core.adapters import url_scheme
from stem_core.errors import ConfigurationError
from stem_core.settings import load_settings, redact_url


def test_defaults_to_the_embedded_sqlite_file_under_xdg() -> None:
    settings = load_settings(env={"XDG_DATA_HOME": "/data"})
    assert settings.broker_url == "sqlite:///data/stem/stem.db"
    assert settings.backend_url == settings.broker_url
    assert settings.namespace == "stem"


def test_home_fallback() -> None:
    settings = load_settings(env={"HOME": "/home/op"})
    assert settings.broker_url == "sqlite:///home/op/.local/share/stem/stem.db"


def test_env_then_flags_win() -> None:
    env = {"STEM_BROKER_URL": "redis://r:6379/0", "STEM_NAMESPACE": "staging"}
    settings = load_settings(env=env)
    assert settings.broker_url == "redis://r:6379/0" and settings.backend_url == "redis://r:6379/0"
    assert settings.namespace == "staging"
    settings = load_settings(broker="memory://", backend="sqlite:///tmp/x.db", namespace="prod", env=env)
    assert (settings.broker_url, settings.backend_url, settings.namespace) == ("memory://", "sqlite:///tmp/x.db", "prod")


def test_backend_env_is_separate() -> None:
    env = {"STEM_BROKER_URL": "redis://r/0", "STEM_RESULT_BACKEND_URL": "postgresql://db/x"}
    assert load_settings(env=env).backend_url == "postgresql://db/x"


@pytest.mark.parametrize("ns", ["", "has space", "a.b", "x" * 65, "{x}"])
def test_bad_namespace(ns: str) -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        load_settings(namespace=ns, env={"STEM_NAMESPACE": ns} if ns else {"STEM_NAMESPACE": "a b"})


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://user:pa%40ss@db:5432/x?sslmode=require", "postgresql://user:***@db:5432/x?sslmode=require"),
        ("amqp://guest@h/", "amqp://guest@h/"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "pa%40ss" not in redact_url(url)


def test_settings_to_dict_is_redacted() -> None:
    data = load_settings(broker="redis://:topsecret@h/0", env={}).to_dict()
    assert "topsecret" not in str(data)


@pytest.mark.parametrize("url", ["", "nonsense", "ftp://x", "redis:/x", "://x"])
def test_bad_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        url_scheme(url)


def test_unknown_scheme_error_redacts_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        url_scheme("mongo://u:hunter2@h/db")
    assert "hunter2" not in str(info.value) and "mongo" in str(info.value)


# -- secrets in URLs (issue 15): query parameters, unparseable URLs ---------------------------

SENTINEL = "Sentinel-Pw-7f3a"


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"postgresql://u@db/x?sslpassword={SENTINEL}&sslmode=require", "postgresql://u@db/x?sslpassword=***&sslmode=require"),
        (f"postgresql://u@db/x?password={SENTINEL}", "postgresql://u@db/x?password=***"),
        (f"rediss://h:6380/0?ssl_password={SENTINEL}&ssl_cert_reqs=none", "rediss://h:6380/0?ssl_password=***&ssl_cert_reqs=none"),
        (f"amqps://u:{SENTINEL}@h/v?token={SENTINEL}", "amqps://u:***@h/v?token=***"),
        (f"postgresql://db/x?aws_secret_access_key={SENTINEL}&Api-Key={SENTINEL}&sslkey=/k/{SENTINEL}",
         "postgresql://db/x?aws_secret_access_key=***&Api-Key=***&sslkey=***"),
        (f"sqs://AKIA:{SENTINEL}@?region=eu-west-1&secret={SENTINEL}", "sqs://***:***@?region=eu-west-1&secret=***"),
        (f"sqs://?endpoint=http://u:{SENTINEL}@h:5000", "sqs://?endpoint=http://u:***@h:5000"),
        # a '#', '/' or '?' left unencoded in a password ends the parse early: all withheld
        (f"redis://u:{SENTINEL}#x@h/0", "redis://<unparseable URL withheld>"),
        (f"redis://:12/{SENTINEL}@h/0", "redis://<unparseable URL withheld>"),
        (f"redis://:{SENTINEL}@[h/0", "redis://<unparseable URL withheld>"),
        (f"redis:{SENTINEL}@h", "<unparseable URL withheld>"),
        (SENTINEL, "<unparseable URL withheld>"),
        ("postgresql://h1:5432,h2:5433/db?sslmode=require", "postgresql://h1:5432,h2:5433/db?sslmode=require"),
        ("sqlite:///tmp/a@b.db", "sqlite:///tmp/a@b.db"),
    ],
)
def test_redact_url_hides_query_secrets_and_withholds_unparseable_urls(url: str, shown: str) -> None:
    from stem_core.settings import url_secrets

    assert redact_url(url) == shown
    assert SENTINEL not in redact_url(url)
    if SENTINEL in url:
        assert any(SENTINEL in secret for secret in url_secrets(url))


def test_malformed_url_errors_show_nothing_but_the_scheme() -> None:
    for url in (f"redis://u:{SENTINEL}#x@h/0", f"postgresql://u:{SENTINEL}/x@h/db", f"redis:{SENTINEL}@h", SENTINEL):
        with pytest.raises(ConfigurationError) as info:
            url_scheme(url)
        assert SENTINEL not in str(info.value) and SENTINEL[:4] not in str(info.value)


def test_adapter_configs_scrub_query_secrets_from_driver_messages() -> None:
    from stem_core.adapters.postgres.url import parse_url as pg_parse
    from stem_core.adapters.redis.url import parse_url as redis_parse

    pg = pg_parse(f"postgresql://u:{SENTINEL}x@db/x?sslpassword={SENTINEL}", {}, {})
    assert pg.redact(f"bad sslpassword {SENTINEL} / {SENTINEL}x") == "bad sslpassword *** / ***"
    rd = redis_parse(f"rediss://h/0?ssl_password={SENTINEL}", {}, {})
    assert SENTINEL not in rd.redact(f"key file locked with {SENTINEL}") and SENTINEL not in rd.shown_url


def test_ssl_options_on_plain_redis_are_a_configuration_error() -> None:
    from stem_core.adapters.redis.url import parse_url as redis_parse

    with pytest.raises(ConfigurationError, match="rediss://") as info:
        redis_parse(f"redis://h/0?ssl_password={SENTINEL}", {}, {})
    assert SENTINEL not in str(info.value)


def test_audit_retention_defaults_to_30_days_and_reads_the_environment() -> None:
    from stem_core.settings import AUDIT_RETENTION_SECONDS, audit_retention_seconds

    assert audit_retention_seconds({}) == AUDIT_RETENTION_SECONDS == 30 * 86400
    assert audit_retention_seconds({"STEM_AUDIT_RETENTION": "90d"}) == 90 * 86400
    for bad in ("forever", "0", "-1d"):
        with pytest.raises(ConfigurationError, match="STEM_AUDIT_RETENTION"):
            audit_retention_seconds({"STEM_AUDIT_RETENTION": bad})


def test_dead_letter_retention_defaults_to_14_days_and_reads_the_environment() -> None:
    from stem_core.settings import DEAD_LETTER_RETENTION_SECONDS, dead_letter_retention_seconds

    assert dead_letter_retention_seconds({}) == DEAD_LETTER_RETENTION_SECONDS == 14 * 86400
    assert dead_letter_retention_seconds({"STEM_DEAD_LETTER_RETENTION": "7d"}) == 7 * 86400
    assert dead_letter_retention_seconds({"STEM_DEAD_LETTER_RETENTION": "500ms"}) == 0.5
    for bad in ("forever", "0", "-1d", "99999999d"):
        with pytest.raises(ConfigurationError, match="STEM_DEAD_LETTER_RETENTION"):
            dead_letter_retention_seconds({"STEM_DEAD_LETTER_RETENTION": bad})


def test_sqs_dead_queue_retention_is_brought_into_what_sqs_accepts() -> None:
    from stem_core.adapters.sqs.queues import dead_retention_period

    assert dead_retention_period(0.5) == 60
    assert dead_retention_period(7200.0) == 7200
    assert dead_retention_period(30 * 86400.0) == 14 * 86400
