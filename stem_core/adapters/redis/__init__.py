"""Redis adapters (``redis://``, ``rediss://``): the Streams broker and the result backend.

Both need the ``redis`` extra (``redis[hiredis]``); ``stem_core.adapters`` imports this
package only when a Redis URL is used.
"""

from __future__ import annotations

from .backend import RedisBackend
from .broker import RedisBroker

__all__ = ["RedisBackend", "RedisBroker"]
