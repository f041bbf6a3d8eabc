"""Structured log fields and the JSON line formatter (``--log-format json``; docs/metrics.md).

A worker binds ``worker_id`` for its whole run and the task fields (``task_id``,
``task_name``, ``queue``, ``attempt``) while it handles one delivery (``bind``: a context
variable, so each handler task sees its own and a task body's own log lines carry them).
A record's own ``extra=`` fields win over the bound ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import unicodedata
from contextvars import ContextVar
from typing import Any, Iterator, Mapping

TASK_FIELDS = ("task_id", "task_name", "queue", "attempt")
# Fields a record may carry (``extra=``) that the JSON line copies when present.
EXTRA_FIELDS = ("worker_id", *TASK_FIELDS, "outcome", "duration", "reason", "retry_in", "error")
LOG_FORMATS = ("text", "json")
ENV_LOG_FORMAT = "STEM_LOG_FORMAT"

_bound: ContextVar[Mapping[str, Any]] = ContextVar("stem_log_fields", default={})
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def bound_fields() -> Mapping[str, Any]:
    """The fields bound in the current context."""
    return _bound.get()


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged in this context until the block ends."""
    token = _bound.set({**_bound.get(), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_for_context(**fields: Any) -> None:
    """Add ``fields`` to the current context for good (an asyncio task's own context)."""
    _bound.set({**_bound.get(), **fields})


def _escape_hidden(text: str) -> str:
    """JSON text (``ensure_ascii=False``) with every invisible character as ``\\uXXXX``: they
    can only sit inside strings, where the escape decodes to the same character."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        if not ch.isascii() and unicodedata.category(ch) in _HIDDEN:
            code = ord(ch)
            if code > 0xFFFF:  # not hidden in practice (tags), but keep JSON's surrogate pairs
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``ts``, ``level``, ``logger``, ``message``,
    the bound and ``extra=`` fields (``EXTRA_FIELDS``), and ``exc_info`` for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = record.created
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z"
        data: dict[str, Any] = {"ts": ts, "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        fields = _bound.get()
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = fields.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return _escape_hidden(json.dumps(data, ensure_ascii=False, default=str))


__all__ = ["ENV_LOG_FORMAT", "EXTRA_FIELDS", "JsonFormatter", "LOG_FORMATS", "TASK_FIELDS", "bind",
           "bind_for_context", "bound_fields"]
