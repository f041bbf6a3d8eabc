"""The frame around every view: banner, title line, filter bar and footer.

Each widget changes its text only when the text changed, so the once-a-second age tick
costs a few bytes on the wire, not a repaint.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Input, Static

from .literal import clean


class Line(Static):
    """A one-line ``Static`` that repaints only when its text changes."""

    def __init__(self, text: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(Text(text), id=id, classes=classes, markup=False)
        self._text = text
        self._style = ""

    def show(self, text: str, style: str = "") -> None:
        if text != self._text or style != self._style:
            self._text, self._style = text, style
            self.update(Text(text, style=style))

    def show_text(self, text: Text) -> None:
        """Show a styled ``Text`` (built from ``literal`` pieces)."""
        style = repr(text.spans)
        if text.plain != self._text or style != self._style:
            self._text, self._style = text.plain, style
            self.update(text)

    @property
    def text(self) -> str:
        return self._text


class Banner(Line):
    """Shown only while the broker is unreachable: what failed and when it retries."""

    def set_problem(self, text: str | None) -> None:
        if text is None:
            self.display = False
            return
        self.show(clean(text))
        self.display = True


class TitleBar(Horizontal):
    """View name and context on the left, broker and namespace on the right."""

    def compose(self) -> ComposeResult:
        yield Line(id="title-left")
        yield Line(id="title-right")

    def set(self, left: str, right: str) -> None:
        # query, not query_one: a poll may land while this bar is still composing.
        for line in self.query("#title-left").results(Line):
            line.show(left)
        for line in self.query("#title-right").results(Line):
            line.show(right)


class StemFooter(Horizontal):
    """Textual's key footer (the current view's bindings) and the data age."""

    def compose(self) -> ComposeResult:
        # The age first: when the keys do not fit (80 columns) they are what gets cut.
        yield Line(id="age")
        yield Footer(show_command_palette=False, compact=True)

    def set_age(self, text: str, style: str = "") -> None:
        for line in self.query("#age").results(Line):
            line.show(text, style)


class StemInput(Input):
    """An ``Input`` whose cursor does not blink when the app says so (snapshot tests)."""

    def on_mount(self) -> None:
        if not getattr(self.app, "blink", True):
            self.cursor_blink = False


class FilterBar(StemInput):
    """The ``/`` prompt. Enter applies, Escape cancels; both hide it again."""

    class Applied(Message):
        """``text`` is the new filter, or None when the prompt was cancelled."""

        def __init__(self, text: str | None) -> None:
            super().__init__()
            self.text = text

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__(placeholder="filter: words, queue:NAME task:NAME state:STATE, !word excludes", id="filter-bar")
        self.display = False

    def open(self, current: str) -> None:
        self.value = current
        self.display = True
        self.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.display = False
        self.post_message(self.Applied(event.value))

    def action_cancel(self) -> None:
        self.display = False
        self.post_message(self.Applied(None))


__all__ = ["Banner", "FilterBar", "Line", "StemFooter", "StemInput", "TitleBar"]
