"""Messages the data source and the action runner post to the app.

Workers never touch widgets: they post one of these, and the app (on its own message
loop) hands the data to the views. ``SnapshotReady`` may replace a queued older one
(``can_replace``), so a slow terminal never works through a backlog of stale snapshots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from stem_core.ops import ActionResult, Explanation

    from .source import Snapshot


class SnapshotReady(Message):
    """A poll finished: everything the current view shows, read at one instant."""

    def __init__(self, snapshot: "Snapshot") -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class SourceFailed(Message):
    """A poll failed (broker or backend unreachable, or a read error); the source keeps
    retrying every ``retry_in`` seconds."""

    def __init__(self, error: str, failures: int, retry_in: float | None, *, unreachable: bool = True) -> None:
        super().__init__()
        self.error = error
        self.failures = failures
        self.retry_in = retry_in
        # False: the servers answered but the read failed (the banner must not blame the network)
        self.unreachable = unreachable


class ActionFinished(Message):
    """An action ran (not a dry run): what it did, and the ``stem`` command that does the same."""

    def __init__(self, title: str, result: "ActionResult", command: str) -> None:
        super().__init__()
        self.title = title
        self.result = result
        self.command = command


class ActionFailed(Message):
    """An action (or its preview) raised; ``error`` is one line."""

    def __init__(self, title: str, error: str, command: str | None = None) -> None:
        super().__init__()
        self.title = title
        self.error = error
        self.command = command


class ExplainReady(Message):
    def __init__(self, explanation: "Explanation") -> None:
        super().__init__()
        self.explanation = explanation


class StatusReady(Message):
    """The result-backend status of the message selected in a detail panel."""

    def __init__(self, task_id: str, status: dict[str, Any] | None) -> None:
        super().__init__()
        self.task_id = task_id
        self.status = status


__all__ = ["ActionFailed", "ActionFinished", "ExplainReady", "SnapshotReady", "SourceFailed", "StatusReady"]
