"""The one error tree of Stem.

Every adapter translates its driver's exceptions here, in one place, so that no
``redis``, ``psycopg`` or ``sqlite3`` exception reaches a worker, the CLI or the TUI::

    StemError
    ├── InvalidEnvelope (also ValueError)    a message or its fields are malformed
    │   └── EnvelopeTooLarge                 encoded, it is over STEM_MAX_ENVELOPE_BYTES
    ├── InvalidName (also ValueError)        a queue or channel name is not allowed
    ├── ConfigurationError (also ValueError) bad URL, unknown scheme, missing extra
    ├── Unsupported                          the adapter lacks the capability asked for
    ├── LeaseLost                            the receipt no longer holds the message
    ├── BrokerUnavailable (also ConnectionError)
    │   └── BackendUnavailable               the server cannot be reached or went away
    ├── StorageRejected                      the server refused the data for good
    ├── TaskNotFound (also LookupError)
    ├── WaitTimeout (also TimeoutError)      Stem.wait gave up before a terminal state
    ├── CallTimeout (also TimeoutError)      a sync call (enqueue_sync, ...) got no answer in time
    ├── SignatureInvalid                     an envelope or control command failed its signature check
    └── TaskRevoked                          the task was revoked while it ran

The CLI maps them to its exit codes: ``ValueError`` family -> 2, ``BrokerUnavailable``
-> 3, the rest -> 1.
"""

from __future__ import annotations


class StemError(Exception):
    """Base class of every error Stem raises on purpose."""


class InvalidEnvelope(StemError, ValueError):
    """An envelope (or its JSON) is malformed; the message says which field and why."""


class EnvelopeTooLarge(InvalidEnvelope):
    """The encoded envelope is larger than ``STEM_MAX_ENVELOPE_BYTES`` (1 MiB by default)."""


class InvalidName(StemError, ValueError):
    """A queue or channel name is empty, too long or holds characters outside ``[A-Za-z0-9._:-]``."""


class ConfigurationError(StemError, ValueError):
    """A URL, namespace or option cannot be used (unknown scheme, missing extra, bad value)."""


class Unsupported(StemError):
    """The adapter does not have the capability the call needs (see ``Capabilities``)."""


class LeaseLost(StemError):
    """The delivery's receipt is stale: the message was redelivered, requeued, acked or removed."""


class BrokerUnavailable(StemError, ConnectionError):
    """The broker (or backend) server cannot be reached, or the connection broke mid-call."""


class BackendUnavailable(BrokerUnavailable):
    """The result backend cannot be reached."""


class StorageRejected(StemError):
    """The server refused a write for a reason that retrying cannot cure: a value too long
    or out of range, a constraint. Adapters raise it instead of a plain ``StemError`` so
    the worker stops retrying such a write (it dead-letters the task instead)."""


class TaskNotFound(StemError, LookupError):
    """No task, status or dead letter with that id exists."""


class WaitTimeout(StemError, TimeoutError):
    """``Stem.wait`` reached its timeout before the task reached a terminal state."""

    def __init__(self, message: str, last_status: object | None = None) -> None:
        super().__init__(message)
        self.last_status = last_status


class SignatureInvalid(StemError):
    """An envelope or control command failed its signature check (missing, unknown key,
    malformed or mismatching signature). ``key_id`` is the key it named (None when it
    named none); ``error`` a short kind (``missing signature``, ``unknown key``, ...)."""

    def __init__(self, message: str, *, key_id: str | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.error = error or message


class TaskRevoked(StemError):
    """Raised inside a running task when an operator revoked it with ``terminate``."""


class CallTimeout(StemError, TimeoutError):
    """A synchronous call (``enqueue_sync``, ``enqueue_many_sync``, ...) got no answer from the
    app's sync event-loop thread within its ``call_timeout``; the call was cancelled there."""


__all__ = [
    "BackendUnavailable",
    "BrokerUnavailable",
    "ConfigurationError",
    "EnvelopeTooLarge",
    "InvalidEnvelope",
    "InvalidName",
    "LeaseLost",
    "SignatureInvalid",
    "StemError",
    "StorageRejected",
    "TaskNotFound",
    "TaskRevoked",
    "Unsupported",
    "WaitTimeout",
    "CallTimeout",
]
