"""One JSON-lines history per process (docs/reliability.md, "History event schema").

The file is opened with ``O_APPEND`` and every event is one ``write()`` of one line: once
``write()`` returns the line is in the kernel, so a ``SIGKILL`` of the writer loses
nothing it recorded (no ``fsync``: only a machine crash could). Lines from one process are
in the order that process wrote them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

HISTORY_DIR_ENV = "STEM_CHAOS_HISTORY"


class History:
    """Appends events to ``<directory>/<proc>-<pid>.jsonl`` (``<proc>.jsonl`` for the runner)."""

    def __init__(self, directory: str | os.PathLike[str], proc: str, *, name: str | None = None) -> None:
        self.proc = proc
        self.pid = os.getpid()
        self.path = Path(directory) / f"{name or f'{proc}-{self.pid}'}.jsonl"
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, type_: str, **fields: Any) -> None:
        if self._fd is None:
            raise ValueError("history closed")
        event = {"t": round(time.time(), 6), "proc": self.proc, "pid": self.pid, "type": type_, **fields}
        line = (json.dumps(event, separators=(",", ":"), default=str) + "\n").encode()
        written = os.write(self._fd, line)
        while written < len(line):  # a regular file takes it whole; this only guards a short write
            written += os.write(self._fd, line[written:])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_current: History | None = None


def current(proc: str) -> History | None:
    """The process-wide history in ``$STEM_CHAOS_HISTORY`` (None when unset), opened once."""
    global _current
    if _current is None or _current.pid != os.getpid():
        directory = os.environ.get(HISTORY_DIR_ENV)
        if not directory:
            return None
        _current = History(directory, proc)
    return _current


class CorruptHistory(ValueError):
    pass


def parse_event(raw: bytes) -> dict[str, Any]:
    """One history line as an event; ``ValueError`` when it is not one."""
    event = json.loads(raw)
    if not isinstance(event, dict) or "type" not in event:
        raise ValueError("not an event object")
    return event


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """Events of one file. A torn *last* line (the writer was killed inside ``write()``)
    is skipped; an unparsable line anywhere else raises ``CorruptHistory``."""
    lines = path.read_bytes().split(b"\n")
    last = len(lines) - 1
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            event = parse_event(raw)
        except ValueError as exc:
            if number == last:  # no newline after it: torn by a kill
                return
            raise CorruptHistory(f"{path.name}:{number + 1}: {exc}") from None
        yield event


def read_dir(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every event of every ``*.jsonl`` in ``directory``, ordered by time (stable per file)."""
    events: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        events.extend(read_file(path))
    events.sort(key=lambda e: float(e.get("t", 0.0)))
    return events


class HistoryTail:
    """The events of a directory of histories, each file read from where the last call
    stopped (the runner polls while the run goes on: the full profile's histories reach a
    million lines). A line without its newline yet is left for the next call (its writer
    may be inside ``write()``); a complete line that does not parse is skipped here (the
    checker, which reads the files whole with ``read_dir``, reports it)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)
        self._offsets: dict[Path, int] = {}
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        added = False
        for path in sorted(self._dir.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            end = chunk.rfind(b"\n") + 1
            if not end:
                continue
            self._offsets[path] = offset + end
            for raw in chunk[:end].split(b"\n"):
                if raw.strip():
                    try:
                        self._events.append(parse_event(raw))
                    except ValueError:
                        continue
                    added = True
        if added:
            self._events.sort(key=lambda e: float(e.get("t", 0.0)))
        return list(self._events)
