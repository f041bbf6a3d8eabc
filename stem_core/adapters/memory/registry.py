"""``memory://NAME`` URLs and the process-global stores behind them.

Every broker (and every result backend) opened on the same NAME and namespace in one
process shares one store, so ``Stem(broker="memory://x")`` and a ``Worker`` on
``memory://x`` see the same queues. ``memory://`` is NAME ``default``. Stores live until
``drop_stores(NAME)``: like a server, they outlive the adapters that talk to them.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, TypeVar
from urllib.parse import parse_qsl

from ...errors import ConfigurationError

SCHEME_PREFIX = "memory://"
DEFAULT_STORE_NAME = "default"
_NAME_RE = re.compile(r"[A-Za-z0-9._:\-]{1,200}")

T = TypeVar("T")

_lock = threading.Lock()
_stores: dict[tuple[str, str, str], Any] = {}


def parse_memory_url(url: str, options: dict[str, Any], allowed: dict[str, type]) -> tuple[str, dict[str, Any]]:
    """``(NAME, options)`` from ``memory://NAME?opt=value`` plus keyword ``options``.

    Query values are converted with the option's type; keyword options win over the URL.
    Unknown options raise ``ConfigurationError``.
    """
    if not isinstance(url, str) or not url.lower().startswith(SCHEME_PREFIX):
        raise ConfigurationError(f"not a memory:// URL: {url!r}")
    rest = url[len(SCHEME_PREFIX):]
    path, _, query = rest.partition("?")
    name = path.strip("/") or DEFAULT_STORE_NAME
    if _NAME_RE.fullmatch(name) is None:
        raise ConfigurationError(f"invalid memory:// store name {name!r}: use letters, digits and . _ - :")
    merged: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ConfigurationError(f"unknown memory:// option {key!r}; known: {', '.join(sorted(allowed)) or 'none'}")
        try:
            merged[key] = allowed[key](raw)
        except ValueError:
            raise ConfigurationError(f"memory:// option {key}={raw!r} is not a valid {allowed[key].__name__}") from None
    for key, value in options.items():
        if key not in allowed:
            raise ConfigurationError(f"unknown memory:// option {key!r}; known: {', '.join(sorted(allowed)) or 'none'}")
        merged[key] = value
    return name, merged


def store_for(kind: str, name: str, namespace: str, factory: Callable[[], T]) -> T:
    """The process-global store of ``kind`` for ``(name, namespace)``, created on first use."""
    key = (kind, name, namespace)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = factory()
        return store


def drop_stores(name: str) -> int:
    """Forget every store (broker and backend, every namespace) of ``memory://name``."""
    with _lock:
        doomed = [key for key in _stores if key[1] == name]
        for key in doomed:
            del _stores[key]
        return len(doomed)


__all__ = ["DEFAULT_STORE_NAME", "drop_stores", "parse_memory_url", "store_for"]
