"""The in-memory adapters: the reference implementation of every contract rule.

``memory://NAME`` (``memory://`` = NAME ``default``) names a process-global store, so
every broker and backend opened on the same NAME and namespace in one process share it.
Not durable and not cross-process; everything else the contracts promise is here.
"""

from __future__ import annotations

from .backend import MemoryBackend
from .broker import MemoryBroker
from .registry import drop_stores

__all__ = ["MemoryBackend", "MemoryBroker", "drop_stores"]
