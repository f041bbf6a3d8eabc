"""The in-memory adapters: the reference implementation of every contract rule, and the
executable example of the adapter recipe in ``docs/adapters.md``.

``memory://NAME`` (``memory://`` = NAME ``default``) names a process-global store, so
every broker and backend opened on the same NAME and namespace in one process share it.
Not durable and not cross-process; everything else the contracts promise is here.

The recipe's shape, part by part (where there is no server, the store stands in for it)::

    url.py         MemoryConfig, parse_memory_url
    registry.py    the process-global stores (the "servers"), drop_stores   [no recipe file]
    store.py       MemoryStore: queues, messages, dead letters and subscriptions, with
                   the transitions that keep their indexes true (what a server holds)
    connection.py  MemoryConnection: open/close over a store; raises BrokerUnavailable
    publish.py     MemoryPublisher        consume.py   MemoryConsumer (settling too)
    channels.py    MemoryChannels         inspect.py   MemoryInspector
    dead.py        MemoryDeadLetters      broker.py    MemoryBroker, one-line delegations
    backend.py     MemoryBackend over a MemoryResultStore of its own

No part is absent, and there is no fused ``enqueue``/``ack_with_status``: the result
backend's store is not the broker's, so those take the contract's two steps.
"""

from __future__ import annotations

from .backend import MemoryBackend
from .broker import MemoryBroker
from .registry import drop_stores

__all__ = ["MemoryBackend", "MemoryBroker", "drop_stores"]
