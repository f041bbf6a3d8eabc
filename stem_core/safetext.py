"""Text from data made safe for a terminal or a log: ``neutralise`` (used by the CLI and
the TUI through ``stem_tui.text``) and ``SafeFormatter`` (the worker's log lines).

Task names, worker ids, queue names in heartbeats and exception messages come from
whoever can write to the broker; written raw to a terminal, stderr or journald, an escape
sequence could recolour or rewrite the screen and a ``\\r\\n`` forge a log line. Hidden
characters (C0/C1 controls, DEL, bidi overrides, zero-width and other format
characters, line separators) become visible ``\\xNN``/``\\uNNNN`` escapes instead.
"""

from __future__ import annotations

import logging
import unicodedata

# Categories whose characters are invisible or move the cursor: control, format (bidi
# overrides, zero-width), line and paragraph separators, surrogates.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def neutralise(value: object) -> str:
    """``value`` as text safe for a terminal: hidden characters become ``\\xNN``/``\\uNNNN``."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x100 and (code < 0x20 or 0x7F <= code <= 0x9F):
            out.append(f"\\x{code:02x}")
        elif unicodedata.category(ch) in _HIDDEN_CATEGORIES:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


class SafeFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose every record is one line of visible characters: the
    formatted line (message, arguments, any field of the format) is neutralised whole,
    so a ``\\r\\n`` or an escape sequence in a task name or worker id cannot forge or
    recolour a line. A traceback keeps its own line breaks, each of its lines neutralised."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = neutralise(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        extra = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            text += "\n" + "\n".join(neutralise(line) for line in block.splitlines())
        return text


__all__ = ["SafeFormatter", "neutralise"]
