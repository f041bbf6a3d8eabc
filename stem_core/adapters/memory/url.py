"""``memory://`` URLs and adapter options: ``MemoryConfig``.

Accepted forms::

    memory://                       the store named ``default``
    memory://NAME                   the store named NAME (letters, digits and . _ - :)
    memory://NAME?lease_seconds=5   with options

Options come from the query string and from keyword arguments (keywords win); each is a
number of seconds. Unknown options raise ``ConfigurationError``. A memory URL carries no
credentials, so unlike a server adapter's config this one has nothing to redact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl

from ...errors import ConfigurationError

SCHEME_PREFIX = "memory://"
DEFAULT_STORE_NAME = "default"
_NAME_RE = re.compile(r"[A-Za-z0-9._:\-]{1,200}")


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """A parsed ``memory://`` URL: the store's name and the options given with it."""

    name: str
    options: dict[str, float]


def parse_memory_url(url: str, options: Mapping[str, Any], allowed: frozenset[str]) -> MemoryConfig:
    """The store name of ``memory://NAME?opt=value`` and its checked options (query, then
    keywords): each must be one of ``allowed`` and a number of seconds."""
    if not isinstance(url, str) or not url.lower().startswith(SCHEME_PREFIX):
        raise ConfigurationError(f"not a memory:// URL: {url!r}")
    rest = url[len(SCHEME_PREFIX):]
    path, _, query = rest.partition("?")
    name = path.strip("/") or DEFAULT_STORE_NAME
    if _NAME_RE.fullmatch(name) is None:
        raise ConfigurationError(f"invalid memory:// store name {name!r}: use letters, digits and . _ - :")
    merged: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        _check_known(key, allowed)
        try:
            merged[key] = float(raw)
        except ValueError:
            raise ConfigurationError(f"memory:// option {key}={raw!r} is not a valid float") from None
    for key, value in options.items():
        _check_known(key, allowed)
        merged[key] = value
    for key, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}")
    return MemoryConfig(name=name, options={key: float(value) for key, value in merged.items()})


def _check_known(key: str, allowed: frozenset[str]) -> None:
    if key not in allowed:
        raise ConfigurationError(f"unknown memory:// option {key!r}; known: {', '.join(sorted(allowed)) or 'none'}")


__all__ = ["DEFAULT_STORE_NAME", "MemoryConfig", "SCHEME_PREFIX", "parse_memory_url"]
