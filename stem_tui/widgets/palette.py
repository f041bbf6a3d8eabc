"""The ``:`` command palette: every binding of the current view and of the app is a
command (so nothing is reachable only by a key), plus "open queue NAME" for each queue."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from ..app import StemTui


class StemCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Any]]:
        app: "StemTui" = self.app  # type: ignore[assignment]
        out: list[tuple[str, str, Any]] = []
        for name, help_text, runner in app.palette_commands():
            out.append((name, help_text, runner))
        return out

    async def discover(self) -> Hits:
        for name, help_text, runner in self._commands():
            yield DiscoveryHit(name, runner, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, runner in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), runner, text=name, help=help_text)


def runner(app: Any, action: str, target: Any) -> Any:
    return partial(app.run_palette_action, action, target)


__all__ = ["StemCommands", "runner"]
