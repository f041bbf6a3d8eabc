"""The audit log: one record per action (who, what, when, arguments, result), kept in the
result backend next to the broker it describes (``ResultBackend.append_audit``).

Records are bounded (``AUDIT_VALUE_MAX_CHARS`` per argument) and every URL-looking string
in them goes through ``redact_url``, so neither a bulk payload nor a password can land in
the log.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from datetime import datetime, timedelta
from typing import Any

from ..clock import to_iso, utcnow
from ..envelope import uuid7
from ..settings import redact_url

ENV_ACTOR = "STEM_ACTOR"
# One argument's JSON is cut to this many characters in the audit record.
AUDIT_VALUE_MAX_CHARS = 2000
# Lists (ids, samples) keep at most this many items in the audit record.
AUDIT_LIST_MAX_ITEMS = 50

_URL_WITH_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@]*@[^\s]*")


def default_actor() -> str:
    """``$STEM_ACTOR``, else ``$USER@hostname``."""
    explicit = os.environ.get(ENV_ACTOR)
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def scrub(value: Any) -> Any:
    """``value`` JSON-ready: URL passwords redacted, long lists bounded, times as ISO text,
    durations as seconds."""
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return _URL_WITH_USERINFO.sub(lambda m: redact_url(m.group(0)), value)
    if isinstance(value, dict):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [scrub(v) for v in list(value)[:AUDIT_LIST_MAX_ITEMS]]
        if len(value) > AUDIT_LIST_MAX_ITEMS:
            items.append(f"... {len(value) - AUDIT_LIST_MAX_ITEMS} more")
        return items
    return value


def bounded(value: Any) -> Any:
    """``scrub(value)``, replaced by a truncated JSON text when it is too long."""
    clean = scrub(value)
    encoded = json.dumps(clean, default=str, ensure_ascii=False)
    if len(encoded) <= AUDIT_VALUE_MAX_CHARS:
        return clean
    return encoded[:AUDIT_VALUE_MAX_CHARS] + f"... ({len(encoded)} characters)"


def audit_record(
    *,
    action: str,
    actor: str,
    namespace: str,
    broker: str,
    arguments: dict[str, Any],
    result: dict[str, Any] | None,
    error: str | None,
    reason: str | None,
) -> dict[str, Any]:
    """The JSON object ``append_audit`` stores."""
    return {
        "id": uuid7(),
        "at": to_iso(utcnow()),
        "actor": scrub(actor),
        "action": action,
        "namespace": namespace,
        "broker": broker,
        "arguments": {k: bounded(v) for k, v in arguments.items()},
        "result": {k: bounded(v) for k, v in (result or {}).items()},
        "ok": error is None,
        "error": scrub(error) if error is not None else None,
        "reason": scrub(reason) if reason is not None else None,
    }


__all__ = ["AUDIT_LIST_MAX_ITEMS", "AUDIT_VALUE_MAX_CHARS", "ENV_ACTOR", "audit_record", "bounded", "default_actor", "scrub"]
