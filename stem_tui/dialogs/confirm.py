"""The confirmation of a destructive action: the count from the frozen preview, a
sample of what it hits, and the ``stem`` command that does the same."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from ..widgets.chrome import StemInput
from ..widgets.literal import clean, literal
from .plans import Preview

# Sample rows listed in the dialog.
SAMPLE_ROWS = 5


def sample_line(item: dict[str, Any]) -> Text:
    parts = [item.get("name") or item.get("queue") or item.get("worker_id"), item.get("id")]
    extra = item.get("reason") or item.get("holder") or item.get("state")
    text = "  • " + "  ".join(clean(p, 40) for p in parts if p)
    if extra:
        text += f"  ({clean(extra, 40)})"
    return Text(text)


class ConfirmDialog(ModalScreen[str | None]):
    """Returns the audit reason ("" for none) when confirmed, None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+y", "confirm", "Confirm"),
    ]

    def __init__(self, preview: Preview, command: str, counted_at: str) -> None:
        super().__init__()
        self.preview = preview
        self.command = command
        self.counted_at = counted_at

    def compose(self) -> ComposeResult:
        plan = self.preview.plan
        with Vertical(id="dialog", classes="dialog danger" if plan.destructive else "dialog"):
            yield Static(literal(f"{plan.title}?", "bold", limit=None), markup=False, classes="dialog-title")
            count = Text(f"{plan.verb} {self.preview.count} {plan.noun}", style="bold")
            count.append(f"  (counted at {self.counted_at})", style="dim")
            yield Static(count, markup=False, id="count")
            lines = Text("\n").join(sample_line(item) for item in self.preview.sample[:SAMPLE_ROWS])
            if self.preview.count > SAMPLE_ROWS:
                lines.append(f"\n  ... and {self.preview.count - SAMPLE_ROWS} more")
            yield Static(lines, markup=False, id="sample")
            if plan.note:
                yield Static(literal(plan.note, "dim", limit=None), markup=False, id="note")
            yield Static(Text("same as:", style="dim"), markup=False)
            yield Static(literal(self.command, "bold", limit=None), markup=False, id="command", classes="command")
            yield StemInput(compact=True, placeholder="reason (optional, kept in the audit log)", id="reason")
            with Horizontal(classes="buttons"):
                yield Button(f"{plan.verb.capitalize()} {self.preview.count}", variant="error" if plan.destructive else "primary",
                             id="confirm")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#confirm", Button).focus()

    def action_confirm(self) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


__all__ = ["ConfirmDialog"]
