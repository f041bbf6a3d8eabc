"""``MemoryConnection``: a broker's handle on its store, in the place of a server client.

Opening and closing it is all there is to connecting: the store (``store.py``) lives on
in the process whether or not anyone is connected. It is also the one place the memory
broker raises ``BrokerUnavailable``: every part checks it before touching the store, so
a closed broker refuses work exactly as a broker whose server went away would.
"""

from __future__ import annotations

from ...errors import BrokerUnavailable
from .store import MemoryStore


class MemoryConnection:
    """Open/closed state over one ``MemoryStore``; see the module docstring."""

    def __init__(self, store: MemoryStore, name: str) -> None:
        self.store = store
        self.name = name
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise ``BrokerUnavailable`` once the connection was closed."""
        if self._closed:
            raise BrokerUnavailable(f"memory://{self.name} broker is closed")


__all__ = ["MemoryConnection"]
