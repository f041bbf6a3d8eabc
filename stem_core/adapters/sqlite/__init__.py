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
"""

from __future__ import annotations

from .broker import SQLiteBroker
from .results import SQLiteBackend

__all__ = ["SQLiteBackend", "SQLiteBroker"]
