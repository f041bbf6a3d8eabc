"""``postgresql://`` URLs: libpq connection parameters plus Stem's options.

URL query parameters that are not Stem options go to libpq unchanged (``sslmode``,
``sslrootcert``, ``application_name``, ``connect_timeout``, ``options`` ...); libpq
rejects unknown ones, and we turn that into a ``ConfigurationError``. Passwords never
appear in a message: every text we raise goes through ``redact``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ...errors import ConfigurationError
from ...settings import redact_text, redact_url, url_secrets

# libpq gives up on an unreachable server after this long (per attempt).
CONNECT_TIMEOUT_S = 5
# Safety net: the server ends any of our sessions left idle inside a transaction this long.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class PostgresConfig:
    """What ``from_url`` parsed: the libpq conninfo, Stem options and the redacted URL."""

    conninfo: str
    shown_url: str
    password: str | None
    options: dict[str, Any] = field(default_factory=dict)
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)

    def redact(self, text: str) -> str:
        """``text`` with the password and secret query values (``sslpassword``) hidden."""
        return redact_text(text, self.secrets | ({self.password} if self.password else set()))


def parse_url(url: str, options: dict[str, Any], known: dict[str, Callable[[Any], Any]]) -> PostgresConfig:
    """Split ``url`` into libpq conninfo and the Stem options named in ``known``.

    ``known`` maps option name -> converter (raising ``ValueError`` on bad input); keyword
    ``options`` win over query parameters; anything else in ``options`` is an error.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {shown!r}: {exc}") from None
    stem_opts: dict[str, Any] = {}
    libpq_query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in known:
            stem_opts[key] = value
        else:
            libpq_query.append((key, value))
    for key, value in options.items():
        if key not in known:
            raise ConfigurationError(
                f"unknown PostgreSQL option {key!r}; known: {', '.join(sorted(known))} (libpq parameters go in the URL query)"
            )
        stem_opts[key] = value
    parsed: dict[str, Any] = {}
    for key, value in stem_opts.items():
        try:
            parsed[key] = known[key](value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"PostgreSQL option {key}={value!r} is invalid: {exc}") from None
    scheme = "postgresql" if parts.scheme.lower() in ("postgres", "postgresql") else parts.scheme
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(libpq_query), ""))
    try:
        params = conninfo_to_dict(clean)
    except psycopg.Error as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {shown!r}: {redact_text(str(exc), url_secrets(url))}") from None
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "stem")
    # Our own session settings travel in the startup packet: UTC timestamps in JSON we
    # build server-side, and a server-side guard against a leaked open transaction.
    extra = f"-c TimeZone=UTC -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    params["options"] = f"{params['options']} {extra}" if params.get("options") else extra
    conninfo = make_conninfo("", **params)
    return PostgresConfig(conninfo=conninfo, shown_url=shown, password=parts.password, options=parsed,
                          secrets=url_secrets(url))


# What makes two conninfos the same database as the same role: a broker and a result
# backend agreeing on these can write to each other's tables in one statement.
_DATABASE_KEYS = ("host", "hostaddr", "port", "dbname", "user", "service")


def same_database(a: PostgresConfig, b: PostgresConfig) -> bool:
    """True when ``a`` and ``b`` reach the same database as the same user (other libpq
    parameters, such as ``application_name`` or ``sslmode``, may differ)."""
    if a.conninfo == b.conninfo:
        return True
    da, db = conninfo_to_dict(a.conninfo), conninfo_to_dict(b.conninfo)
    return all(da.get(key) == db.get(key) for key in _DATABASE_KEYS)


def positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be positive")
    return number


def positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


__all__ = ["PostgresConfig", "parse_url", "positive_float", "positive_int", "same_database"]
