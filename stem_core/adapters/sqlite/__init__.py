"""The SQLite adapters: Stem's embedded default, durable and shared across processes.

``sqlite:///abs/path/stem.db`` (or ``sqlite://relative.db``) names one database file in
WAL mode; the file and its folder are created on first use, and the schema is migrated
(safely, even when several processes start at once). Broker and result backend may share
the file; namespaces share it too, each seeing only its own rows.

Options (URL query or keyword, seconds): broker ``lease_seconds`` (30), ``busy_timeout``
(15: waiting longer for the single writer lock raises BrokerUnavailable) and
``poll_interval`` (0.004: the longest an idle consumer or watcher sleeps between two
``PRAGMA data_version`` probes); backend ``result_ttl``, ``heartbeat_ttl``,
``busy_timeout`` and ``poll_interval``.

For one machine and up to about ten worker processes: there is one writer at a time,
and WAL needs shared memory, so never put the file on NFS or another network file
system. Every capability is supported.

The recipe's shape (``docs/adapters.md``), part by part. The async parts run on the event
loop; each has its transactions - functions that take the connection first and run on
the database thread, one hop per call - in a module beside it::

    url.py         SQLiteConfig, parse_sqlite_url
    db.py          SQLiteDatabase: the recipe's connection (open/close, one hop per
                   transaction, driver errors translated); built on thread.py (the
                   database thread and its group commit), bell.py (the in-process
                   doorbell) and poller.py (data_version probes for other processes)
    publish.py     SQLitePublisher, fused enqueue        transactions: jobs.py
    consume.py     SQLiteConsumer, SQLiteSubscription    transactions: jobs.py
    channels.py    SQLiteChannels                        transactions: broadcasts.py
    inspect.py     SQLiteInspector                       transactions: repair.py
    dead.py        SQLiteDeadLetters                     transactions: repair.py
    broker.py      SQLiteBroker, one-line delegations
    backend.py     SQLiteBackend                         transactions: store.py
    rows.py        envelopes to rows and back; schema.py, queries.sql, migrations/ the SQL

A receive round reads the subscription's broadcasts in the claim's transaction, so the
broadcast cursors live on ``SQLiteSubscription`` and ``SQLiteChannels`` supplies the rest
(publishing, registration, the touch and sweep schedule).
"""

from __future__ import annotations

from .backend import SQLiteBackend
from .broker import SQLiteBroker

__all__ = ["SQLiteBackend", "SQLiteBroker"]
