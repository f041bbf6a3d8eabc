"""The process-global stores behind ``memory://NAME`` URLs: the memory adapter's servers.

Every broker (and every result backend) opened on the same NAME and namespace in one
process shares one store, so ``Stem(broker="memory://x")`` and a ``Worker`` on
``memory://x`` see the same queues. Stores live until ``drop_stores(NAME)``: like a
server, they outlive the adapters that talk to them.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_stores: dict[tuple[str, str, str], Any] = {}


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


__all__ = ["drop_stores", "store_for"]
