"""Read-only modal panels: Explain (``e`` on a task), Help (``?``) and the replies of a
control command."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from stem_core.ops import ActionResult, Explanation

from ..widgets.literal import age, block, clean, literal
from ..widgets.filter import QUALIFIERS

BLOCKER_STYLES = {"running": "green", "done": "green", "dead": "bold red", "dead-holder": "bold red",
                  "unknown-id": "bold red", "no-workers": "bold red", "paused": "yellow", "not-due": "cyan"}


def explanation_text(exp: Explanation) -> Text:
    out = Text()
    out.append(literal(exp.summary, "bold", limit=None))
    out.append("\n")
    where = f"state {exp.state}" + (f" · queue {exp.queue}" if exp.queue else "")
    if exp.position is not None:
        where += f" · position {exp.position}"
    if exp.due_at is not None:
        where += f" · due {exp.due_at.isoformat()}"
    out.append(literal(where, "dim", limit=None))
    out.append("\n\n")
    for blocker in exp.blockers:
        out.append(literal(f"[{blocker.code}] ", BLOCKER_STYLES.get(blocker.code, "yellow"), limit=None))
        out.append(literal(blocker.message, limit=None))
        out.append("\n")
        if blocker.fix:
            out.append(literal(f"    fix: {blocker.fix}", "bold", limit=None))
            out.append("\n")
    if exp.lease is not None:
        lease = exp.lease
        out.append("\n")
        out.append(literal(f"lease: held by {lease.holder} · expires in {age(lease.expires_in)}"
                           + (f" · stuck: {lease.stuck_reason}" if lease.stuck else ""), limit=None))
    if exp.status is not None:
        error = exp.status.get("error")
        out.append("\n")
        out.append(literal(f"status: {exp.status.get('state')} (attempt {exp.status.get('attempt')})", limit=None))
        if exp.status_note:
            out.append("\n")
            out.append(literal(f"        {exp.status_note}", "yellow", limit=None))
        if isinstance(error, dict):
            out.append("\n")
            out.append(literal(f"error: {error.get('type')}: {error.get('message')}", "bold red", limit=None))
    if exp.envelope is not None:
        out.append("\n\nenvelope\n", style="bold")
        out.append(block(exp.envelope))
    return out


class PanelDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", "Close", show=False)]

    def __init__(self, title: str, body: Text) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog wide"):
            yield Static(literal(self.title_text, "bold", limit=None), markup=False, classes="dialog-title")
            with VerticalScroll(id="panel-scroll"):
                yield Static(self.body, markup=False, id="panel-text")
            yield Static(Text("Esc closes", style="dim"), markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


class ExplainDialog(PanelDialog):
    def __init__(self, explanation: Explanation) -> None:
        super().__init__(f"Why is {clean(explanation.task_id)} not running?", explanation_text(explanation))


def help_text(view: str, bindings: Iterable[tuple[str, str]], global_bindings: Iterable[tuple[str, str]],
              read_only: bool) -> Text:
    out = Text()
    out.append(f"{view}\n", style="bold")
    for key, description in bindings:
        out.append(f"  {key:<10}", style="bold cyan")
        out.append(f"{description}\n")
    out.append("\nEverywhere\n", style="bold")
    for key, description in global_bindings:
        out.append(f"  {key:<10}", style="bold cyan")
        out.append(f"{description}\n")
    out.append("\nFilter (/)\n", style="bold")
    out.append(f"  words match anywhere; {', '.join(q + ':' for q in QUALIFIERS)} match one field;\n"
               "  * and ? are globs; !word excludes. Esc clears the filter.\n")
    out.append("\nCommand palette (:)\n", style="bold")
    out.append("  every key above is also a command; type a queue name to open it.\n")
    if read_only:
        out.append("\nRead-only: actions that change queues or workers are hidden.\n", style="yellow")
    return out


def result_text(result: ActionResult, command: str) -> Text:
    out = Text()
    out.append(literal(f"{result.action}: {result.count} · {'ok' if result.ok else 'NOT OK'}", "bold", limit=None))
    out.append("\n")
    missing = result.detail.missing
    if missing:
        out.append(literal(f"no answer from: {', '.join(map(str, missing))}", "bold red", limit=None))
        out.append("\n")
    for item in result.sample:
        out.append(block(item))
        out.append("\n")
    out.append("\nsame as: ", style="dim")
    out.append(literal(command, "bold", limit=None))
    return out


__all__ = ["ExplainDialog", "PanelDialog", "explanation_text", "help_text", "result_text"]
