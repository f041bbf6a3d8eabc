"""Forms that build a ``Plan``: pause a queue, enqueue a task, send a control command.

Each returns the plan (or None when cancelled); bad input is one line in the form, never
a traceback. The app then previews the plan (a dry run) and, for destructive plans, asks
with ``ConfirmDialog``.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from stem_core import durations
from stem_core.control.protocol import CONTROL_COMMANDS
from stem_core.settings import CONTROL_TIMEOUT_SECONDS

from ..widgets.chrome import StemInput
from ..widgets.literal import literal
from . import plans


def parse_duration(text: str, what: str) -> float | None:
    """``500ms``, ``10s``, ``5m``, ``2h`` (bare = seconds) -> seconds; "" -> None. The
    CLI's grammar (``stem_core.durations``), with a shorter message for the form's error line."""
    if not text.strip():
        return None
    if not durations.is_duration(text):
        raise ValueError(f"{what}: use e.g. 500ms, 10s, 5m, 2h")
    return durations.parse_duration(text, option=what)


def parse_object(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f'{what} must be a JSON object like {{"key": 1}}')
    return value


class FormDialog(ModalScreen["plans.Plan | None"]):
    """A titled form with an error line and Submit / Cancel."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    TITLE_TEXT = ""
    SUBMIT = "Preview"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(literal(self.TITLE_TEXT, "bold", limit=None), markup=False, classes="dialog-title")
            yield from self.fields()
            yield Static(Text(""), markup=False, id="form-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button(self.SUBMIT, variant="primary", id="submit")
                yield Button("Cancel", id="cancel")

    def fields(self) -> ComposeResult:
        return iter(())

    def build(self) -> "plans.Plan":
        raise NotImplementedError

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "submit":
            self.submit()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def submit(self) -> None:
        try:
            plan = self.build()
        except ValueError as exc:
            self.query_one("#form-error", Static).update(literal(str(exc), "bold red", limit=None))
            return
        self.dismiss(plan)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value


class PauseDialog(FormDialog):
    TITLE_TEXT = "Pause queue(s)"
    SUBMIT = "Pause"

    def __init__(self, queues: list[str]) -> None:
        super().__init__()
        self.queues = queues
        self.TITLE_TEXT = f"Pause {', '.join(queues)}"

    def fields(self) -> ComposeResult:
        yield Static(Text("Workers stop taking new tasks from it; running ones finish. Persisted: a restarted "
                          "worker stays paused.", style="dim"), markup=False)
        yield StemInput(compact=True, placeholder="reason (shown to everyone, kept in the audit log)", id="reason")
        yield StemInput(compact=True, placeholder="for how long (e.g. 30m; empty = until resumed)", id="until")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def build(self) -> "plans.Plan":
        until = parse_duration(self.value("until"), "for how long")
        return plans.pause(self.queues, self.value("reason").strip() or None, until)


class EnqueueDialog(FormDialog):
    TITLE_TEXT = "Enqueue a task"
    SUBMIT = "Enqueue"

    def __init__(self, queue: str | None = None) -> None:
        super().__init__()
        self.queue = queue

    def fields(self) -> ComposeResult:
        yield StemInput(compact=True, placeholder="task name, e.g. email.send", id="task")
        yield StemInput(compact=True, placeholder='args as JSON, e.g. {"to": "a@b.c"}', id="args")
        yield StemInput(compact=True, value=self.queue or "", placeholder="queue (default: default)", id="queue")
        yield StemInput(compact=True, placeholder="priority 0-9 (optional)", id="priority")
        yield StemInput(compact=True, placeholder="delay, e.g. 10s (optional)", id="delay")

    def on_mount(self) -> None:
        self.query_one("#task", Input).focus()

    def build(self) -> "plans.Plan":
        name = self.value("task").strip()
        if not name:
            raise ValueError("name the task")
        raw_priority = self.value("priority").strip()
        try:
            priority = int(raw_priority) if raw_priority else None
        except ValueError:
            raise ValueError("priority must be a whole number 0-9") from None
        return plans.enqueue(name, parse_object(self.value("args"), "args"), self.value("queue").strip() or None,
                             priority, parse_duration(self.value("delay"), "delay"))


class BroadcastDialog(FormDialog):
    TITLE_TEXT = "Send a control command"
    SUBMIT = "Send"

    def __init__(self, targets: list[str] | None = None) -> None:
        super().__init__()
        self.targets = targets

    def fields(self) -> ComposeResult:
        who = ", ".join(self.targets) if self.targets else "every live worker"
        yield Static(literal(f"to: {who}", limit=None), markup=False)
        options = [(c, c) for c in CONTROL_COMMANDS if c not in ("pause", "resume")]
        yield Select(options, value="ping", allow_blank=False, id="command", compact=True)
        yield StemInput(compact=True, placeholder='arguments as JSON: revoke {"task_ids": ["..."], "terminate": true}, '
                                'shutdown {"mode": "warm"}', id="arguments")
        yield Static(Text("wait for replies:", style="dim"), markup=False)
        yield StemInput(compact=True, value=f"{CONTROL_TIMEOUT_SECONDS:g}s", placeholder="wait for replies, e.g. 5s", id="timeout")
        yield Static(Text("pause/resume: use P on a queue", style="dim"), markup=False)

    def on_mount(self) -> None:
        self.query_one("#command", Select).focus()

    def build(self) -> "plans.Plan":
        command = str(self.query_one("#command", Select).value)
        timeout = parse_duration(self.value("timeout"), "timeout") or CONTROL_TIMEOUT_SECONDS
        return plans.broadcast(command, parse_object(self.value("arguments"), "arguments"), self.targets, timeout)


__all__ = ["BroadcastDialog", "EnqueueDialog", "FormDialog", "PauseDialog", "parse_duration", "parse_object"]
