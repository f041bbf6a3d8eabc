"""No secret written in a URL (password, ``?password=``, ``?sslpassword=``, ``?ssl_password=``,
tokens) and nothing of an unparseable URL reaches the output of ``stem config``,
``stem health`` or a connection error line (issue 15)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli

PW = "SentinelUserPw91"
QPW = "SentinelQueryPw92"
# Port 1 on the loopback refuses at once: the connection fails, its error line is shown.
UNREACHABLE = [
    f"postgresql://stem:{PW}@127.0.0.1:1/test?sslpassword={QPW}&connect_timeout=2",
    f"postgresql://stem@127.0.0.1:1/test?password={QPW}",
    f"rediss://:{PW}@127.0.0.1:1/0?ssl_password={QPW}&ssl_cert_reqs=none",
    f"amqp://guest:{PW}@127.0.0.1:1/",
]
UNPARSEABLE = [f"redis://u:{PW}#{QPW}@h/0", f"redis://:12/{PW}@h/0", f"postgresql:{PW}@h/db"]
# Parseable, but refused by the adapter: the error line quotes the URL, redacted.
REFUSED = [f"amqp://guest:{PW}@127.0.0.1:1/?token={QPW}", f"redis://127.0.0.1:1/0?ssl_password={QPW}"]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PW, QPW, PW[:8], QPW[:8]):
            assert secret not in text, text


@pytest.mark.parametrize("url", UNREACHABLE + UNPARSEABLE + REFUSED)
def test_config_never_shows_a_secret(cli: Cli, url: str) -> None:
    for fmt in ([], ["--json"]):
        result = cli("config", "--broker", url, "--backend", url, *fmt)
        assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize("url", UNREACHABLE)
def test_health_and_connection_errors_never_show_a_secret(cli: Cli, url: str) -> None:
    for args in (["health"], ["health", "--json"], ["inspect", "queues"], ["inspect", "queues", "--json"]):
        result = cli(*args, "--broker", url, "--backend", "memory://")
        assert result.exit_code == 3, (args, result.stdout, result.stderr)
        assert_no_secret(result.stdout, result.stderr)
        assert "127.0.0.1" in result.stdout + result.stderr  # the server is still named


@pytest.mark.parametrize("url", UNPARSEABLE)
def test_an_unparseable_url_is_bad_input_and_withheld(cli: Cli, url: str) -> None:
    for args in (["health"], ["inspect", "queues"]):
        result = cli(*args, "--broker", url)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert "malformed URL" in result.stderr and "withheld" in result.stderr
        assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize("url", REFUSED)
def test_a_refused_url_is_bad_input_and_redacted(cli: Cli, url: str) -> None:
    for args in (["health"], ["inspect", "queues"]):
        result = cli(*args, "--broker", url, "--backend", "memory://")
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert "***" in result.stderr
        assert_no_secret(result.stdout, result.stderr)
