"""The panel under a message list: the envelope, where the message is, and its status
and error from the result backend — every value literal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from .literal import age, block, clean, field, since

# Traceback lines shown (the last ones: where it failed).
TRACEBACK_LINES = 6


def describe(message: dict[str, Any], status: dict[str, Any] | None, now: datetime) -> Text:
    """``message``: a ``MessageInfo`` or ``DeadLetterEntry`` dict (``to_dict``)."""
    env = message.get("envelope") or {}
    out = Text()

    def line(label: str, value: Any, style: str = "") -> None:
        out.append(f"{label:<10}", style="bold")
        out.append(Text(clean(value), style=style))
        out.append("\n")

    line("task", env.get("name"), "bold")
    line("id", env.get("id"))
    line("queue", f"{clean(env.get('queue'))}  priority {clean(env.get('priority'))}  "
                  f"attempt {clean(env.get('attempt'))}/{clean(env.get('maxRetries'))}")
    enqueued = since(env.get("enqueuedAt"), now)
    line("enqueued", f"{clean(env.get('enqueuedAt'))} ({age(enqueued)} ago)" if enqueued is not None else env.get("enqueuedAt"))
    if env.get("notBefore"):
        due = since(env.get("notBefore"), now)
        line("due", f"{clean(env.get('notBefore'))}" + (f" (in {age(-due)})" if due is not None and due < 0 else ""))
    if "reason" in message:
        line("dead", f"{clean(message.get('reason'))} at {clean(message.get('dead_at'))}", "red")
        if message.get("meta"):
            line("meta", message.get("meta"))
    else:
        holder = message.get("lease_holder")
        where = clean(message.get("state"))
        if holder:
            expires = since(message.get("lease_expires_at"), now)
            where += f", held by {clean(holder)}"
            if expires is not None:
                where += f", lease {'expired ' + age(expires) + ' ago' if expires >= 0 else 'expires in ' + age(-expires)}"
        line("state", f"{where}, delivery #{clean(message.get('delivery_count'))}")
    if status is not None:
        state = clean(status.get("state"))
        line("status", f"{state} (attempt {clean(status.get('attempt'))}, updated {clean(status.get('updated_at'))})",
             "red" if state == "failed" else "")
        error = status.get("error")
        if isinstance(error, dict):
            line("error", f"{clean(error.get('type'))}: {clean(error.get('message'))}", "bold red")
            trace = error.get("traceback")
            if isinstance(trace, str) and trace.strip():
                tail = trace.rstrip().split("\n")[-TRACEBACK_LINES:]
                out.append(block("\n".join(tail), "red"))
                out.append("\n")
    out.append("args\n", style="bold")
    out.append(block(env.get("args") or {}))
    if env.get("headers"):
        out.append("\nheaders\n", style="bold")
        out.append(block(env.get("headers")))
    if field(env, "meta"):
        out.append("\nmeta\n", style="bold")
        out.append(block(env.get("meta")))
    return out


class MessagePanel(VerticalScroll):
    """A scrollable panel showing one message (or a hint when nothing is selected)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self._key: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("select a message", style="dim"), markup=False, id="panel-body")

    def show(self, text: Text) -> None:
        key = text.plain + repr(text.spans)
        if key != self._key:
            self._key = key
            self.query_one("#panel-body", Static).update(text)

    def hint(self, message: str) -> None:
        self.show(Text(message, style="dim"))


__all__ = ["MessagePanel", "describe"]
