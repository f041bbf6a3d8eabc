"""``sqlite://`` URLs and adapter options: ``SQLiteConfig``.

Accepted forms::

    sqlite:///abs/path/stem.db      absolute path (three slashes)
    sqlite://relative/stem.db       relative to the current directory when parsed
    sqlite:///~/stem.db             ``~`` is expanded
    sqlite:///path.db?lease_seconds=10&poll_interval=0.005

``:memory:`` is refused: every connection would get its own empty database, so nothing
could cross a process or even a second connection (use ``memory://`` instead).
Options come from the query string and from keyword arguments (keywords win); each is a
positive number of seconds. Unknown options raise ``ConfigurationError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigurationError
from ...settings import redact_url

SCHEME = "sqlite"
# Waiting for the single writer lock longer than this is reported as BrokerUnavailable.
BUSY_TIMEOUT_S = 15.0
# Idle consumers and watchers look for new commits at most this far apart.
POLL_INTERVAL_S = 0.004


@dataclass(frozen=True, slots=True)
class SQLiteConfig:
    """A parsed ``sqlite://`` URL: the database file and the options given with it (a file
    path carries no credentials, so there is nothing to redact)."""

    path: Path
    options: dict[str, float]


def parse_sqlite_url(url: str, options: Mapping[str, Any], allowed: frozenset[str]) -> SQLiteConfig:
    """Split ``url`` into an absolute file path and checked options (query, then keywords)."""
    if not isinstance(url, str) or not url.lower().startswith(SCHEME + "://"):
        raise ConfigurationError(f"not a sqlite:// URL: {redact_url(str(url))!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed sqlite URL {redact_url(url)!r}: {exc}") from None
    # ``sqlite://rel/x.db`` puts "rel" in the netloc; ``sqlite:///abs`` leaves it empty.
    raw = unquote(parts.netloc + parts.path)
    if not raw or raw == "/":
        raise ConfigurationError(f"sqlite URL {redact_url(url)!r} names no file: use sqlite:///abs/path.db or sqlite://relative.db")
    if raw in (":memory:", "/:memory:") or raw.startswith("file:"):
        raise ConfigurationError("sqlite :memory: and file: URIs cannot be shared between connections; use memory:// or a file path")
    if raw.startswith("/~"):
        raw = raw[1:]
    path = Path(raw).expanduser().absolute()
    merged: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        merged[key] = value
    merged.update(options)
    checked: dict[str, float] = {}
    for key, value in merged.items():
        if key not in allowed:
            raise ConfigurationError(f"unknown sqlite:// option {key!r}; known: {', '.join(sorted(allowed))}")
        checked[key] = _seconds(key, value)
    return SQLiteConfig(path=path, options=checked)


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigurationError(f"sqlite:// option {key}={value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"sqlite:// option {key} must be a positive number of seconds, got {value!r}")
    return float(value)


__all__ = ["BUSY_TIMEOUT_S", "POLL_INTERVAL_S", "SCHEME", "SQLiteConfig", "parse_sqlite_url"]
