"""The audit log: one record per action (who, what, when, arguments, result), kept in the
result backend next to the broker it describes (``ResultBackend.append_audit``).

Records are bounded (``AUDIT_VALUE_MAX_CHARS`` per argument) and every URL-looking string
in them goes through ``redact_url``, so neither a bulk payload nor a password can land in
the log. ``AuditTrail.run`` is the one wrapper every action of ``Ops`` goes through: a dry
run is not audited (it changes nothing); a real one is, failed runs included.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import re
import socket
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from ..clock import to_iso, utcnow
from ..contract import ResultBackend
from ..envelope import uuid7
from ..errors import StemError
from ..settings import DEFAULT_PAGE_LIMIT, redact_url
from .commands import equivalent_command
from .models import ActionResult

log = logging.getLogger("stem.ops")

ENV_ACTOR = "STEM_ACTOR"
# One argument's JSON is cut to this many characters in the audit record.
AUDIT_VALUE_MAX_CHARS = 2000
# Lists (ids, samples) keep at most this many items in the audit record.
AUDIT_LIST_MAX_ITEMS = 50

# Every URL-looking run of text: ``redact_url`` hides its password and secret query values.
# A match starts only where a scheme can start (not inside a run of scheme characters) and
# a scheme is at most 32 characters, so a long argument is scanned once, not once per
# letter (``[A-Za-z]...*://`` alone took seconds on 40,000 letters: quadratic).
_URL_TEXT = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://\S*")


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
        return _URL_TEXT.sub(lambda m: redact_url(m.group(0)), value)
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


class AuditTrail:
    """Appends the records of ``actor``'s actions on one broker to ``backend`` and reads
    them back."""

    def __init__(self, backend: ResultBackend, *, actor: str, namespace: str, broker: str) -> None:
        self.backend = backend
        self.actor = actor
        self.namespace = namespace
        self.broker = broker

    async def run(self, action: str, arguments: dict[str, Any], reason: str | None, dry_run: bool,
                  work: Callable[[], Awaitable[ActionResult]]) -> ActionResult:
        """``work()``, with its equivalent command line; unless ``dry_run``, audited (a
        failure is recorded, then raised unchanged)."""
        command = equivalent_command(action, arguments)
        if dry_run:
            return dataclasses.replace(await work(), command=command)
        try:
            result = await work()
        except Exception as exc:
            await self.write(action, arguments, None, f"{type(exc).__name__}: {exc}", reason)
            raise
        # The record keeps ids (bounded by ``scrub``), not the sample's payloads.
        detail = result.detail
        summary: dict[str, Any] = {"count": result.count, "ok": result.ok}
        summary.update({key: detail[key] for key in ("missing", "replies_from", "ids") if key in detail})
        if detail.ids is None:
            summary["sample"] = [s.get("id") or s.get("queue") or s.get("worker_id") for s in result.sample]
        recorded = {**arguments, "command": command} if command else arguments
        audit_id, problem = await self.write(action, recorded, summary, None, reason)
        if problem is not None:
            detail = dataclasses.replace(detail, audit_error=problem)
        return dataclasses.replace(result, audit_id=audit_id, detail=detail, command=command)

    async def write(self, action: str, arguments: dict[str, Any], result: dict[str, Any] | None, error: str | None,
                    reason: str | None) -> tuple[str | None, str | None]:
        """Append one record: ``(its id, None)``, or ``(None, why)`` when the backend refused it."""
        record = audit_record(action=action, actor=self.actor, namespace=self.namespace, broker=self.broker,
                              arguments=arguments, result=result, error=error, reason=reason)
        try:
            await self.backend.append_audit(record)
        except (StemError, ValueError) as exc:
            # The action already happened: report the lost record instead of failing it.
            log.warning("could not append the audit record of %s: %s", action, exc)
            return None, f"audit record not written: {exc}"
        return record["id"], None

    async def records(self, limit: int = DEFAULT_PAGE_LIMIT, offset: int = 0) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        return await self.backend.list_audit(limit, offset)


__all__ = [
    "AUDIT_LIST_MAX_ITEMS",
    "AUDIT_VALUE_MAX_CHARS",
    "AuditTrail",
    "ENV_ACTOR",
    "audit_record",
    "bounded",
    "default_actor",
    "scrub",
]
